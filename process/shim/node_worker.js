// weir's worker for Node.js functions: shipped inside weir, started by it as
//   node <this file> <handler.js> <mode> <file>
// where <handler.js> is the version's kept copy and <file> the path the
// handler was written at: it is compiled as if it were there, so its own
// `require('./…')` and node_modules resolve as they would.
// It talks to weir over two pipes, fd 3 (from weir) and fd 4 (to weir), so
// whatever the function prints never touches the protocol: weir logs it.
// A frame is: json length (u32 LE), blob length (u32 LE), JSON, blob.
// Keys and values travel in the blob, located by lengths (in a batch) or
// [offset, length] pairs (in a reply).
'use strict';

const fs = require('fs');
const Module = require('module');
const net = require('net');
const path = require('path');

const TO_WEIR = 4;

function send(message, blob) {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const extra = blob || Buffer.alloc(0);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(body.length, 0);
  head.writeUInt32LE(extra.length, 4);
  for (const part of [head, body, extra]) {
    let at = 0;
    while (at < part.length) {
      try {
        at += fs.writeSync(TO_WEIR, part, at, part.length - at);
      } catch (e) {
        if (e.code !== 'EAGAIN') throw e;
      }
    }
  }
}

function lastLine(error) {
  if (!(error instanceof Error)) return String(error);
  const stack = String(error.stack || '').split('\n');
  const at = stack.find((l) => l.trim().startsWith('at '));
  return `${error.name}: ${error.message}${at ? ` (${at.trim().slice(3)})` : ''}`;
}

const log = {
  debug: (m) => send({ t: 'log', level: 'debug', message: String(m) }),
  info: (m) => send({ t: 'log', level: 'info', message: String(m) }),
  warn: (m) => send({ t: 'log', level: 'warn', message: String(m) }),
  error: (m) => send({ t: 'log', level: 'error', message: String(m) }),
};

class Event {
  constructor(value, key, timestamp, headers, index) {
    this.value = value;
    this.key = key;
    this.timestamp = timestamp;
    this.headers = Object.fromEntries(headers || []);
    this._v0 = value;
    this._k0 = key;
    this._h0 = JSON.stringify(this.headers);
    this._out = null;
    this._index = index;
  }

  json() {
    return JSON.parse(this.value);
  }
}

class Context {
  constructor(fn, config) {
    this.function = fn;
    this.config = config;
    this.log = log;
    this._emitted = new Map();
  }

  drop(event) { event._out = ['d']; }

  fail(event, reason, retryable = false) { event._out = ['f', String(reason), !!retryable]; }

  route(event, sink) { event._out = ['s', String(sink)]; }

  emit(event, value, key = null, headers = null) {
    const list = this._emitted.get(event._index) || [];
    list.push([value, key, headers]);
    this._emitted.set(event._index, list);
  }
}

function asBuffer(value) {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return Buffer.from(value);
  return Buffer.from(JSON.stringify(value), 'utf8');
}

class Out {
  constructor() { this.parts = []; this.size = 0; }

  put(value) {
    const data = asBuffer(value);
    this.parts.push(data);
    const at = this.size;
    this.size += data.length;
    return [at, data.length];
  }

  blob() { return Buffer.concat(this.parts, this.size); }
}

function pairs(headers) {
  return Object.entries(headers).map(([k, v]) => [String(k), String(v)]);
}

function outcome(event, returned, emitted, out) {
  let entry = null;
  if (returned !== undefined && returned !== null) event.value = returned;
  if (event.value !== event._v0) entry = { v: out.put(event.value) };
  if (event.key !== event._k0) {
    entry = entry || {};
    entry.k = event.key === null || event.key === undefined ? null : out.put(event.key);
  }
  if (JSON.stringify(event.headers) !== event._h0) {
    entry = entry || {};
    entry.h = pairs(event.headers);
  }
  if (event._out) {
    entry = entry || {};
    entry.x = event._out[0];
    if (event._out[0] === 'f') { entry.r = event._out[1]; entry.rt = event._out[2]; }
    if (event._out[0] === 's') entry.s = event._out[1];
  }
  if (emitted) {
    entry = entry || {};
    entry.e = emitted.map(([v, k, h]) => ({
      v: out.put(v),
      k: k === null || k === undefined ? null : out.put(k),
      h: h ? pairs(h) : null,
    }));
  }
  return entry;
}

function batchForm(handler, mode) {
  if (mode === 'batch' || mode === 'event') return mode === 'batch';
  const m = /^[^(]*\(\s*[A-Za-z_$][\w$]*\s*,\s*([A-Za-z_$][\w$]*)/.exec(String(handler));
  return !!m && m[1] === 'events';
}

async function main() {
  const kept = path.resolve(process.argv[2]);
  const mode = process.argv[3] || 'auto';
  const file = path.resolve(process.argv[4] || kept);
  const frames = [];
  let waiting = null;
  let pending = Buffer.alloc(0);
  let ended = false;
  const input = new net.Socket({ fd: 3, readable: true, writable: false });
  input.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 8) {
      const jlen = pending.readUInt32LE(0);
      const blen = pending.readUInt32LE(4);
      if (pending.length < 8 + jlen + blen) break;
      const message = JSON.parse(pending.toString('utf8', 8, 8 + jlen));
      const blob = pending.subarray(8 + jlen, 8 + jlen + blen);
      pending = pending.subarray(8 + jlen + blen);
      frames.push([message, blob]);
    }
    if (waiting && frames.length) { const w = waiting; waiting = null; w(); }
  });
  input.on('end', () => { ended = true; if (waiting) { const w = waiting; waiting = null; w(); } });
  input.on('error', () => { ended = true; if (waiting) { const w = waiting; waiting = null; w(); } });
  const receive = async () => {
    while (!frames.length) {
      if (ended) return [null, null];
      await new Promise((resolve) => { waiting = resolve; });
    }
    return frames.shift();
  };

  const [init] = await receive();
  if (!init || init.t !== 'init') process.exit(2);
  const context = new Context(init.function || '', init.config || {});
  let mod;
  try {
    const m = new Module(file, null);
    m.filename = file;
    m.paths = Module._nodeModulePaths(path.dirname(file));
    m._compile(fs.readFileSync(kept, 'utf8'), file);
    m.loaded = true;
    mod = m.exports;
  } catch (e) {
    send({ t: 'error', message: `${file}: loading failed: ${lastLine(e)}` });
    process.exit(1);
  }
  const handler = mod && (mod.handler || (mod.default && mod.default.handler));
  if (typeof handler !== 'function') {
    send({ t: 'error', message: `${file}: no function \`handler\` (exports.handler = async (context, event) => … or (context, events))` });
    process.exit(1);
  }
  if (typeof mod.init === 'function') {
    try {
      await mod.init(context);
    } catch (e) {
      send({ t: 'error', message: `${file}: init failed: ${lastLine(e)}` });
      process.exit(1);
    }
  }
  const batched = batchForm(handler, mode);
  send({ t: 'ready', runtime: `node ${process.versions.node}`, batch: batched });
  for (;;) {
    const [message, blob] = await receive();
    if (!message) process.exit(0);
    const events = decode(message, blob);
    context._emitted = new Map();
    let returned;
    if (batched) {
      try {
        returned = await handler(context, events);
      } catch (e) {
        send({ t: 'failed', message: lastLine(e) });
        continue;
      }
      if (returned === undefined || returned === null) {
        returned = new Array(events.length).fill(null);
      } else if (returned.length !== events.length) {
        send({ t: 'failed', message: `the handler returned ${returned.length} values for ${events.length} events` });
        continue;
      }
    } else {
      returned = new Array(events.length);
      for (let i = 0; i < events.length; i++) {
        try {
          let r = handler(context, events[i]);
          if (r && typeof r.then === 'function') r = await r;
          returned[i] = r;
        } catch (e) {
          returned[i] = new Raised(lastLine(e));
        }
      }
    }
    reply(events, returned, context._emitted);
  }
}

// The batch's events. The index comes by columns: value lengths `vl`, key
// lengths `kl` (-1: no key; null: no keys at all), timestamps `ts`,
// headers `h`; the values lie one after the other in the blob, then the keys.
function decode(message, blob) {
  const { vl, kl, ts, h } = message;
  const events = new Array(vl.length);
  let at = 0;
  for (let i = 0; i < vl.length; i++) {
    events[i] = new Event(blob.toString('utf8', at, at + vl[i]), null, ts[i], h ? h[i] : null, i);
    at += vl[i];
  }
  if (kl) {
    for (let i = 0; i < kl.length; i++) {
      if (kl[i] >= 0) {
        const key = blob.toString('utf8', at, at + kl[i]);
        events[i].key = key;
        events[i]._k0 = key;
        at += kl[i];
      }
    }
  }
  return events;
}

class Raised {
  constructor(reason) { this.reason = reason; }
}

// Sends the outcomes: when every event was only kept or given a new value
// (the common case), just the values' lengths (`vl`, -1 for kept);
// otherwise one entry per event (`o`).
function reply(events, returned, emitted) {
  if (emitted.size === 0) {
    const lengths = [];
    const parts = [];
    let size = 0;
    let simple = true;
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      const value = returned[i];
      if (value !== undefined && value !== null) {
        if (value instanceof Raised) { simple = false; break; }
        event.value = value;
      }
      if (event._out || event.key !== event._k0 || JSON.stringify(event.headers) !== event._h0) { simple = false; break; }
      if (event.value === event._v0) { lengths.push(-1); continue; }
      const data = asBuffer(event.value);
      parts.push(data);
      size += data.length;
      lengths.push(data.length);
    }
    if (simple) {
      send({ t: 'done', vl: lengths }, Buffer.concat(parts, size));
      return;
    }
  }
  const out = new Out();
  const entries = events.map((event, i) => (returned[i] instanceof Raised
    ? { x: 'f', r: returned[i].reason, rt: false }
    : outcome(event, returned[i], emitted.get(i), out)));
  send({ t: 'done', o: entries }, out.blob());
}

main().catch((e) => {
  try { send({ t: 'error', message: lastLine(e) }); } catch (_) { /* weir is gone */ }
  process.exit(1);
});
