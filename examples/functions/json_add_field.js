// Adds a field to every JSON object event: the json-add-field step in Node.js.
//
//   [[steps]]
//   type = "node"
//   handler = "examples/functions/json_add_field.js"
//   config = { field = "seen", value = true }
'use strict';

let field = 'seen';
let value = true;

// runs once per worker: read the config, open connections, warm caches
exports.init = async (context) => {
  if (context.config.field !== undefined) field = context.config.field;
  if (context.config.value !== undefined) value = context.config.value;
  context.log.info(`adding ${field}=${JSON.stringify(value)}`);
};

exports.handler = (context, event) => {
  const data = JSON.parse(event.value);
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    context.fail(event, 'not a JSON object');
    return null;
  }
  data[field] = value;
  return JSON.stringify(data);
};
