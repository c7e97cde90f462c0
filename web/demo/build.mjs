// Builds the demo storefront into web/dist/, which is committed so that a
// fresh clone's `cargo run -p chatd` serves it without Node.js (chatd
// embeds the folder). `--check` builds into a temporary folder and fails
// if web/dist differs: the test command runs it, so a stale bundle cannot
// be committed unnoticed.
import { build } from "esbuild";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "chat-demo-")) : dist;

if (!check) rmSync(dist, { recursive: true, force: true });
cpSync(join(here, "public"), out, { recursive: true });
// The pages are one shell; demo.js renders the page named by data-page.
const pages = { index: "Cửa hàng demo", product: "Sản phẩm", order: "Đơn hàng", seller: "Kênh Người Bán" };
for (const [page, title] of Object.entries(pages)) {
  writeFileSync(
    join(out, `${page}.html`),
    `<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · chatd demo</title>
<link rel="stylesheet" href="demo.css">
<link rel="icon" href="data:,">
</head>
<body data-page="${page}">
<div id="app"></div>
<script src="chat-ui.js"></script>
<script src="demo.js"></script>
</body>
</html>
`,
  );
}
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
