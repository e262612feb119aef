// Runs the examples of Markdown documents (README.md, docs/operations.md) as tests, in order,
// in one bash session per document, as a person would type them. tests/docs/docs-test sets up
// the install they run on; this file only reads, runs and compares.
//
// What runs (docs/operations.md, "Examples are tests", is the reference for writers):
//   ```sh       every command runs and must exit 0. Comment lines are for people.
//   ```console  lines starting with "# " are commands (a trailing "\" continues one); the lines
//               after a command, up to the next command, are its expected output: they must
//               match what it printed (stdout and stderr), line by line. "..." alone on a line
//               stands for any number of lines, "..." inside a line for any text.
//   ```js       runs with node beside tests/gateway's node_modules (the openai client).
//   A command whose trailing comment starts with "fails" ("# fails: ...") must exit non-zero.
//   <!-- docs-test: skip REASON --> before a block leaves it out (the summary lists it).
// Other blocks (text, json, yaml) are not run.
//
// Usage: node run-docs.mjs [--section TITLE] [--keep-going] [--results FILE] FILE...
// (--keep-going goes on after a failed command, to see every mismatch of a document at once.)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const gatewayDir = path.resolve(here, '../gateway');

// A document's sections ("## " headings, plus the part before the first one) and their steps.
export function parse(text, file) {
  const sections = [{ title: '(top)', steps: [], skipped: [] }];
  const lines = text.split('\n');
  let skip = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const heading = line.match(/^## (.*)$/);
    if (heading) {
      sections.push({ title: heading[1].trim(), steps: [], skipped: [] });
      continue;
    }
    const marker = line.match(/^<!-- docs-test: skip (.*?) -->$/);
    if (marker) {
      skip = marker[1];
      continue;
    }
    const fence = line.match(/^```(\w*)\s*$/);
    if (!fence || fence[1] === '') continue;
    const kind = fence[1];
    const start = i + 1;
    let end = start;
    while (end < lines.length && !lines[end].startsWith('```')) end++;
    const body = lines.slice(start, end);
    const section = sections[sections.length - 1];
    const where = `${file}:${start + 1}`;
    if (skip !== null) {
      section.skipped.push({ where, kind, reason: skip });
    } else if (kind === 'sh') {
      section.steps.push(...shSteps(body, file, start));
    } else if (kind === 'console') {
      section.steps.push(...consoleSteps(body, file, start));
    } else if (kind === 'js') {
      section.steps.push({ where, kind: 'js', command: body.join('\n'), expect: null, fails: false });
    }
    skip = null;
    i = end;
  }
  return sections.filter((s) => s.steps.length > 0 || s.skipped.length > 0);
}

const failsComment = (command) => /(^|\s)#\s*fails\b/.test(command);

function shSteps(body, file, start) {
  const steps = [];
  for (let i = 0; i < body.length; i++) {
    if (/^\s*(#.*)?$/.test(body[i])) continue;
    const first = i;
    let command = body[i];
    while (command.endsWith('\\') && i + 1 < body.length) command += '\n' + body[++i];
    steps.push({ where: `${file}:${start + first + 1}`, kind: 'sh', command, expect: null,
                 fails: failsComment(command) });
  }
  return steps;
}

function consoleSteps(body, file, start) {
  const steps = [];
  for (let i = 0; i < body.length; i++) {
    if (!body[i].startsWith('# ')) {
      if (steps.length === 0 && body[i].trim() !== '') {
        throw new Error(`${file}:${start + i + 1}: console block output before any command`);
      }
      if (steps.length > 0) steps[steps.length - 1].expect.push(body[i].trimEnd());
      continue;
    }
    const first = i;
    let command = body[i].slice(2);
    while (command.endsWith('\\') && i + 1 < body.length) command += '\n' + body[++i];
    steps.push({ where: `${file}:${start + first + 1}`, kind: 'console', command, expect: [],
                 fails: failsComment(command) });
  }
  for (const s of steps) {
    while (s.expect.length > 0 && s.expect[s.expect.length - 1] === '') s.expect.pop();
  }
  return steps;
}

const escapeRegex = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
function linePattern(expected) {
  return new RegExp('^' + expected.split('...').map(escapeRegex).join('.*') + '$');
}

// Whether `actual` lines match `expected` (see the header); the first expected line that does
// not match, or null.
export function match(expected, actual) {
  const want = expected.map((e) => (e === '...' ? null : linePattern(e)));
  const got = actual.map((a) => a.trimEnd());
  while (got.length > 0 && got[got.length - 1] === '') got.pop();
  const memo = new Map();
  let furthest = 0;
  const go = (w, g) => {
    const key = w * (got.length + 1) + g;
    if (memo.has(key)) return memo.get(key);
    furthest = Math.max(furthest, w);
    let ok;
    if (w === want.length) ok = g === got.length;
    else if (want[w] === null) ok = go(w + 1, g) || (g < got.length && go(w, g + 1));
    else ok = g < got.length && want[w].test(got[g]) && go(w + 1, g + 1);
    memo.set(key, ok);
    return ok;
  };
  if (go(0, 0)) return null;
  return furthest < expected.length ? expected[furthest] : '(more output than shown)';
}

// One bash session: each step is evaluated in it (so variables carry on), with its output in
// a file and its exit status sent back on fd 3.
class Shell {
  constructor(dir) {
    this.dir = dir;
    this.proc = spawn('bash', ['--noprofile', '--norc'], {
      stdio: ['pipe', 'inherit', 'inherit', 'pipe'],
      env: process.env,
    });
    this.lines = readline.createInterface({ input: this.proc.stdio[3] });
    this.waiting = null;
    this.lines.on('line', (l) => this.waiting && this.waiting(l));
    this.proc.on('exit', (code) => this.waiting && this.waiting(`exit ${code}`));
  }
  run(n, command) {
    const cmdFile = path.join(this.dir, `${n}.sh`);
    const outFile = path.join(this.dir, `${n}.out`);
    fs.writeFileSync(cmdFile, command + '\n');
    return new Promise((resolve) => {
      this.waiting = (line) => {
        this.waiting = null;
        const m = line.match(/^rc (\d+)$/);
        resolve({ rc: m ? Number(m[1]) : -1, output: fs.readFileSync(outFile, 'utf8') });
      };
      this.proc.stdin.write(`{ . '${cmdFile}'; } >'${outFile}' 2>&1 </dev/null; ` +
                            `echo "rc $?" >&3\n`);
    });
  }
  close() {
    this.proc.stdin.end();
  }
}

async function runFile(file, options) {
  const text = fs.readFileSync(file, 'utf8');
  const sections = parse(text, path.relative(process.cwd(), file) || file);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'docs-test-'));
  const shell = new Shell(dir);
  const results = [];
  let n = 0;
  let failed = false;
  for (const section of sections) {
    if (options.section && section.title !== options.section) continue;
    const began = Date.now();
    const result = { file, section: section.title, steps: section.steps.length,
                     skipped: section.skipped, seconds: 0, ok: true };
    results.push(result);
    console.log(`\n=== ${file}: ${section.title} (${section.steps.length} commands)`);
    for (const s of section.skipped) console.log(`    skipped ${s.where} (${s.kind}): ${s.reason}`);
    for (const step of section.steps) {
      n++;
      let command = step.command;
      if (step.kind === 'js') {
        const script = path.join(gatewayDir, `.docs-example-${process.pid}-${n}.mjs`);
        fs.writeFileSync(script, step.command + '\n');
        command = `node '${script}'; __rc=$?; rm -f '${script}'; (exit $__rc)`;
      }
      const t0 = Date.now();
      const { rc, output } = await shell.run(n, command);
      const took = ((Date.now() - t0) / 1000).toFixed(1);
      const shown = step.command.split('\n')[0];
      console.log(`--- ${step.where} (${took} s, exit ${rc}) ${shown}`);
      let problem = null;
      if (step.fails && rc === 0) problem = 'exited 0, but the example says it fails';
      if (!step.fails && rc !== 0) problem = `exited ${rc}`;
      if (!problem && step.expect) {
        const mismatch = match(step.expect, output.split('\n'));
        if (mismatch !== null) problem = `output does not match the document at: ${mismatch}`;
      }
      if (problem || options.verbose) {
        process.stdout.write(indent(output) + (output.endsWith('\n') || !output ? '' : '\n'));
      }
      if (problem) {
        console.log(`FAILED ${step.where}: ${problem}`);
        if (step.expect) console.log('expected:\n' + indent(step.expect.join('\n') + '\n'));
        result.ok = false;
        failed = true;
        if (!options.keepGoing) break;
      }
    }
    result.seconds = (Date.now() - began) / 1000;
    if (failed && !options.keepGoing) break;
  }
  shell.close();
  return { results, failed };
}

const indent = (text) => text.split('\n').map((l) => (l ? '    | ' + l : l)).join('\n');

async function main() {
  const args = process.argv.slice(2);
  const options = { section: null, results: null, keepGoing: false,
                    verbose: !!process.env.DOCS_TEST_VERBOSE };
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--section') options.section = args[++i];
    else if (args[i] === '--results') options.results = args[++i];
    else if (args[i] === '--keep-going') options.keepGoing = true;
    else files.push(args[i]);
  }
  const all = [];
  let failed = false;
  for (const file of files) {
    const r = await runFile(file, options);
    all.push(...r.results);
    if (r.failed) {
      failed = true;
      if (!options.keepGoing) break;
    }
  }
  console.log('\nDOCUMENT             SECTION                                    COMMANDS  SECONDS  RESULT');
  for (const r of all) {
    console.log(`${r.file.padEnd(20)} ${r.section.slice(0, 42).padEnd(42)} ` +
                `${String(r.steps).padStart(8)}  ${r.seconds.toFixed(1).padStart(7)}  ` +
                `${r.ok ? 'ok' : 'FAILED'}${r.skipped.length ? ` (${r.skipped.length} skipped)` : ''}`);
  }
  if (options.results) fs.writeFileSync(options.results, JSON.stringify(all, null, 2));
  process.exit(failed ? 1 : 0);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
