// Writes the page's examples.json: the example pods and a few real-world ones (the mesh
// fixtures: Istio's and Linkerd's legacy and native output), as the text they are written
// in, and each policy's example settings. Run by `make playground`.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const texts = (dir, filter = () => true) =>
  Object.fromEntries(
    readdirSync(join(root, dir))
      .filter((f) => f.endsWith(".yaml") && filter(f))
      .sort()
      .map((f) => [f, readFileSync(join(root, dir, f), "utf8")]),
  );
const pods = { ...texts("examples/pods"), ...texts("tests/fixtures/mesh") };
const settings = Object.fromEntries(
  Object.entries(texts("examples/settings")).map(([f, t]) => [f.replace(/\.yaml$/, ""), t]),
);
process.stdout.write(JSON.stringify({ pods, settings }, null, 1));
