// Validates the Kubernetes manifests in deploy/k8s against the Kubernetes
// and KEDA schemas (the kubernetes-models packages), checks that they refer
// to each other consistently, and runs `weir validate` on every pipeline
// file a ConfigMap carries. Exits 1 on the first kind of failure, after
// reporting all of them. Usage: WEIR_BIN=target/debug/weir node validate.mjs
import { readFileSync, readdirSync, statSync, writeFileSync, mkdtempSync } from "node:fs";
import { join, relative } from "node:path";
import { tmpdir } from "node:os";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { ConfigMap, Service } from "kubernetes-models/v1";
import { StatefulSet, Deployment } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const models = {
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/StatefulSet": StatefulSet,
  "apps/v1/Deployment": Deployment,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
};

const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "k8s");
const failures = [];
const fail = (where, what) => failures.push(`${where}: ${what}`);

function yamlFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return name.endsWith(".yaml") ? [path] : [];
  });
}

/** Schema validation of one object; returns the error message or null. */
function schemaError(doc) {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) return `no schema known for ${doc.apiVersion} ${doc.kind}`;
  try {
    new Model(doc).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

// the validator must reject a broken object, or it proves nothing
const broken = {
  apiVersion: "apps/v1",
  kind: "StatefulSet",
  metadata: { name: "broken" },
  spec: { selector: {}, template: { spec: { containers: [{ name: "x", ports: [{ containerPort: "abc" }] }] } } },
};
if (schemaError(broken) === null) fail("self-test", "a StatefulSet with a string port passed validation");

const objects = [];
for (const file of yamlFiles(root)) {
  const where = relative(join(root, "..", ".."), file);
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      fail(where, doc.errors.map((e) => e.message).join("; "));
      continue;
    }
    const obj = doc.toJS();
    if (!obj) continue;
    const error = schemaError(obj);
    if (error) fail(`${where} (${obj.kind} ${obj.metadata?.name})`, error);
    objects.push({ where, obj });
  }
}

const byKind = (kind) => objects.filter(({ obj }) => obj.kind === kind);
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const workloads = [...byKind("StatefulSet"), ...byKind("Deployment")];
for (const { where, obj } of workloads) {
  const labels = obj.spec.template.metadata?.labels;
  if (!matches(obj.spec.selector.matchLabels, labels)) fail(where, "the selector does not match the pod labels");
  if (obj.kind === "StatefulSet" && !byKind("Service").some(({ obj: s }) => s.metadata.name === obj.spec.serviceName))
    fail(where, `no Service \`${obj.spec.serviceName}\` (serviceName)`);
  for (const c of obj.spec.template.spec.containers) {
    for (const probe of [c.livenessProbe, c.readinessProbe]) {
      const port = probe?.httpGet?.port;
      if (typeof port === "string" && !(c.ports ?? []).some((p) => p.name === port))
        fail(where, `a probe uses port \`${port}\`, which the container does not name`);
    }
    for (const m of c.volumeMounts ?? []) {
      if (!(obj.spec.template.spec.volumes ?? []).some((v) => v.name === m.name)) fail(where, `no volume \`${m.name}\``);
    }
  }
  for (const v of obj.spec.template.spec.volumes ?? []) {
    if (v.configMap && !byKind("ConfigMap").some(({ obj: m }) => m.metadata.name === v.configMap.name))
      fail(where, `no ConfigMap \`${v.configMap.name}\``);
  }
}
for (const { where, obj } of [...byKind("Service"), ...byKind("PodDisruptionBudget")]) {
  const selector = obj.kind === "Service" ? obj.spec.selector : obj.spec.selector.matchLabels;
  if (!workloads.some(({ obj: w }) => matches(selector, w.spec.template.metadata?.labels)))
    fail(where, "its selector matches no pod of the workloads here");
}
for (const { where, obj } of byKind("ScaledObject")) {
  const target = obj.spec.scaleTargetRef;
  if (!workloads.some(({ obj: w }) => w.metadata.name === target.name && w.kind === (target.kind ?? "Deployment")))
    fail(where, `no ${target.kind ?? "Deployment"} \`${target.name}\` to scale`);
}

// every pipeline file shipped in a ConfigMap must pass `weir validate`
const weir = process.env.WEIR_BIN;
if (!weir) fail("weir validate", "set WEIR_BIN to the weir binary");
let pipelines = 0;
for (const { where, obj } of byKind("ConfigMap")) {
  for (const [key, text] of Object.entries(obj.data ?? {})) {
    if (!key.endsWith(".toml") || !weir) continue;
    const file = join(mkdtempSync(join(tmpdir(), "weir-deploy-")), key);
    writeFileSync(file, text);
    const run = spawnSync(weir, ["validate", file], {
      env: { ...process.env, BROKERS: "kafka:9092", HOSTNAME: "weir-0" },
      encoding: "utf8",
    });
    pipelines += 1;
    if (run.status !== 0) fail(`${where} (${key})`, `weir validate: ${run.stdout}${run.stderr}`.trim());
  }
}

for (const f of failures) console.error(`deploy: ${f}`);
console.log(`deploy: ${objects.length} objects, ${pipelines} pipeline files checked; ${failures.length} problems`);
process.exit(failures.length ? 1 : 0);
