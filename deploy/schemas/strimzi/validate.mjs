// Checks Strimzi custom resources against Strimzi's CRD schemas, as @kubernetes-models/strimzi-kafka-operator
// compiled them (package-lock.json pins it; ../README.md says which Strimzi releases). Reads a JSON list of
// resources on stdin and prints a JSON list: per resource its kind, name and the schema's complaint or null.
import { readFileSync } from "node:fs";

const resources = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const resource of resources) {
  const { apiVersion, kind, metadata } = resource;
  let error = null;
  try {
    const module = await import(`@kubernetes-models/strimzi-kafka-operator/${apiVersion}/${kind}`);
    new module[kind](resource).validate();
  } catch (caught) {
    error = caught instanceof Error ? caught.message : String(caught);
  }
  results.push({ kind, name: metadata?.name ?? null, error });
}
process.stdout.write(JSON.stringify(results));
