// Parses an AsyncAPI document with @asyncapi/parser (validation against the
// AsyncAPI JSON Schema, then its Spectral ruleset) and checks what the parser
// cannot know about this project. Run through scripts/asyncapi-check.sh, which
// installs the pinned parser and sets ASYNCAPI_PARSER_DIR.
//   node scripts/asyncapi-check.mjs [DOCUMENT]
// Exit 0: valid (warnings are printed and counted); exit 1: invalid.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const file = process.argv[2] ?? "docs/asyncapi.yaml";
const dir = process.env.ASYNCAPI_PARSER_DIR;
if (!dir) {
  console.error("asyncapi: ASYNCAPI_PARSER_DIR is not set (run scripts/asyncapi-check.sh)");
  process.exit(2);
}
const require = createRequire(join(dir, "package.json"));
const { Parser } = require("@asyncapi/parser");
// Ajv is the parser's own dependency (pinned with it).
const requireFromParser = createRequire(require.resolve("@asyncapi/parser"));
const Ajv = requireFromParser("ajv").default;

const SEVERITY = ["error", "warning", "info", "hint"];
// Channel addresses of protocol v2: the topic family is the version.
const ADDRESSES = ["t/{threadId}", "u/{userId}"];

let text;
try {
  text = readFileSync(file, "utf8");
} catch (e) {
  console.error(`asyncapi: cannot read ${file}: ${e.message}`);
  process.exit(1);
}
const { document, diagnostics } = await new Parser().parse(text, { source: file });

const where = (d) => {
  const line = d.range?.start?.line;
  const at = d.path?.length ? d.path.join(".") : "(root)";
  return line === undefined ? at : `${file}:${line + 1} ${at}`;
};
for (const d of diagnostics) {
  if (d.severity <= 1) {
    console.error(`${SEVERITY[d.severity]} ${d.code}: ${d.message} [${where(d)}]`);
  }
}
const errors = diagnostics.filter((d) => d.severity === 0);
const warnings = diagnostics.filter((d) => d.severity === 1);

const problems = [];
if (document) {
  const addresses = document.channels().all().map((c) => c.address()).sort();
  if (JSON.stringify(addresses) !== JSON.stringify([...ADDRESSES].sort())) {
    problems.push(`channel addresses are ${JSON.stringify(addresses)}, want exactly ${JSON.stringify(ADDRESSES)}`);
  }
  const messages = document.components().messages().all();
  if (messages.length === 0) problems.push("components.messages is empty");
  for (const m of messages) {
    if (m.examples().all().length === 0) {
      problems.push(`components.messages.${m.id()} has no example`);
      continue;
    }
    // The parser does not check examples against their payload schema (its
    // AsyncAPI 3 rules have no such rule): do it here. Schemas are JSON
    // Schema draft-07 plus AsyncAPI keywords (discriminator, x-…), which
    // non-strict Ajv ignores.
    if (!m.hasPayload()) continue;
    const ajv = new Ajv({ strict: false, allErrors: true });
    const validate = ajv.compile(m.payload().json());
    for (const [i, ex] of m.examples().all().entries()) {
      if (ex.hasPayload() && !validate(ex.payload())) {
        const name = ex.name() ?? String(i);
        for (const e of validate.errors) {
          problems.push(`components.messages.${m.id()} example "${name}": ${e.instancePath || "/"} ${e.message}`);
        }
      }
    }
  }
}
// The server's own encodings (protocol/tests/fixtures.rs writes them) must
// fit the document: the code and the document cannot drift apart.
const FIXTURES = process.env.ASYNCAPI_FIXTURES ?? "web/sdk/test/fixtures/v2.json";
let fixtures = 0;
if (document && FIXTURES !== "none") {
  const byEvent = new Map();
  for (const op of document.operations().all()) {
    const side = op.action() === "send" ? "client" : "server";
    for (const m of op.messages().all()) {
      const e = m.hasPayload() ? m.payload().json()?.properties?.e?.const : undefined;
      if (e !== undefined && !byEvent.has(`${side}/${e}`)) {
        const ajv = new Ajv({ strict: false, allErrors: true });
        byEvent.set(`${side}/${e}`, ajv.compile(m.payload().json()));
      }
    }
  }
  for (const f of JSON.parse(readFileSync(FIXTURES, "utf8"))) {
    const side = f.name.split("/")[0];
    const validate = byEvent.get(`${side}/${f.json.e}`);
    fixtures += 1;
    if (!validate) {
      problems.push(`fixture ${f.name}: no ${side} message with e = ${JSON.stringify(f.json.e)}`);
    } else if (!validate(f.json)) {
      for (const e of validate.errors) {
        problems.push(`fixture ${f.name}: ${e.instancePath || "/"} ${e.message}`);
      }
    }
  }
}
for (const p of problems) console.error(`error project: ${p}`);

if (!document || errors.length > 0 || problems.length > 0) {
  console.error(
    `asyncapi: ${file} INVALID (${errors.length} errors, ${problems.length} project errors, ${warnings.length} warnings)`,
  );
  process.exit(1);
}
const messages = document.components().messages().all().length;
console.log(
  `asyncapi: ${file} valid (AsyncAPI ${document.version()}, ${messages} messages, ${fixtures} fixtures of the code fit, ${warnings.length} warnings)`,
);
