// Builds the demo storefront into web/dist/, which is committed so that a
// fresh clone's `cargo run -p chatd` serves it without Node.js (chatd
// embeds the folder). `--check` builds into a temporary folder and fails
// if web/dist differs: the test command runs it, so a stale bundle cannot
// be committed unnoticed.
import { build } from "esbuild";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "chat-demo-")) : dist;

if (!check) rmSync(dist, { recursive: true, force: true });
cpSync(join(here, "public"), out, { recursive: true });
const common = {
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  target: ["es2022"],
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
};
// The embeddable kit (SDK + widget + inbox) as one script: `window.ChatUI`.
await build({ ...common, entryPoints: [join(here, "src", "chat-ui.ts")], outfile: join(out, "chat-ui.js"), globalName: "ChatUI" });
// The demo pages' glue, which uses `window.ChatUI`.
await build({ ...common, entryPoints: [join(here, "src", "demo.ts")], outfile: join(out, "demo.js") });

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

if (check) {
  const built = files(out).map((f) => relative(out, f)).sort();
  const committed = files(dist).map((f) => relative(dist, f)).sort();
  const stale = [...new Set([...built, ...committed])].filter(
    (f) => !built.includes(f) || !committed.includes(f) || !readFileSync(join(out, f)).equals(readFileSync(join(dist, f))),
  );
  rmSync(out, { recursive: true, force: true });
  if (stale.length > 0) {
    console.error(`web/dist is stale (${stale.join(", ")}): run \`npm run build --prefix web\` and commit web/dist`);
    process.exit(1);
  }
  console.log(`web/dist is up to date (${built.length} files)`);
} else {
  for (const f of files(out)) console.log(`${relative(here, f)}  ${statSync(f).size} bytes`);
}
