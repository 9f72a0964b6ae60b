// Compiles contracts/src/*.sol with solc-js (no download) into contracts/artifacts/<Name>.json (abi + bytecode).
// Run from the repository root: `node contracts/compile.mjs [OUT_DIR]` (or `make contracts`).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const srcDir = path.join(root, "contracts", "src");
const outDir = process.argv[2] ? path.resolve(process.argv[2]) : path.join(root, "contracts", "artifacts");

const sources = {};
for (const file of fs.readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
function findImports(importPath) {
  const candidate = path.join(root, "node_modules", importPath);
  if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  return { error: `import not found: ${importPath}` };
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
const ours = (e) => !e.sourceLocation || !e.sourceLocation.file.startsWith("@openzeppelin/");
for (const e of (output.errors || []).filter(ours)) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
fs.mkdirSync(outDir, { recursive: true });
for (const file of Object.keys(sources)) {
  const name = path.basename(file, ".sol");
  const contract = output.contracts[file][name];
  const artifact = {
    contractName: name,
    compiler: `solc-js ${solc.version()}`,
    evmVersion: "cancun",
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
  };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
  console.log(`${name}: ${contract.evm.bytecode.object.length / 2} bytes`);
}
