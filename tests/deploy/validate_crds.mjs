// Validates Prometheus Operator custom resources against the schemas generated from the
// operator's API types (npm @kubernetes-models/prometheus-operator, installed by
// tests/deploy/check.sh under COUNTERSIGN_DEPLOY_NODE_PREFIX).
//
//   node validate_crds.mjs OBJECTS.json   (a JSON array of ServiceMonitor / PrometheusRule)
//
// Prints "ok KIND NAME (...)" or "FAIL KIND NAME (...): errors" per object; exits 1 on any
// failure. These schemas check types, enums and required fields; unlike the strict built-in
// check they do not reject unknown fields.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.env.COUNTERSIGN_DEPLOY_NODE_PREFIX;
if (!prefix) {
  console.error("COUNTERSIGN_DEPLOY_NODE_PREFIX is not set");
  process.exit(2);
}
const models = join(prefix, "node_modules/@kubernetes-models/prometheus-operator");
const version = JSON.parse(readFileSync(join(models, "package.json"), "utf8")).version;
const supported = new Set(["ServiceMonitor", "PrometheusRule"]);

let failed = false;
for (const object of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const label = `${object.kind} ${object.metadata?.name} (prometheus-operator schema, @kubernetes-models/prometheus-operator ${version})`;
  if (object.apiVersion !== "monitoring.coreos.com/v1" || !supported.has(object.kind)) {
    console.log(`FAIL ${label}: no validator for ${object.apiVersion} ${object.kind}`);
    failed = true;
    continue;
  }
  const module = await import(
    pathToFileURL(join(models, "monitoring.coreos.com/v1", `${object.kind}.js`)).href
  );
  try {
    new module[object.kind](object).validate();
    console.log(`ok ${label}`);
  } catch (error) {
    console.log(`FAIL ${label}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
