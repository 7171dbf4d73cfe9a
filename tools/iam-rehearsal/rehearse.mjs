#!/usr/bin/env node
// The IAM rehearsal: evaluates recorded AWS calls against the roles infra/template.yaml gives
// each Hangar component. See README.md beside this file.
//
//   node tools/iam-rehearsal/rehearse.mjs --template infra/template.yaml --calls FILE.jsonl
//        [--json out.json] [--param K=V ...] [--stack-name NAME] [--readme infra/README.md] [--quiet]
//
// Exit 0: every record's decision is what it expects (a record without `expect` must be
// Allowed in every authorization). Exit 1: some record is not. Exit 2: bad input (template,
// records, arguments).

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { callDecisions, rehearse } from './lib/evaluate.mjs';
import { loadTemplateFile, Stack, TemplateError } from './lib/template.mjs';

export function parseArgs(argv) {
  const a = { params: {}, calls: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new TemplateError(`${k} needs a value`);
      return argv[++i];
    };
    switch (k) {
      case '--template': a.template = v(); break;
      case '--calls': a.calls.push(v()); break;
      case '--json': a.json = v(); break;
      case '--readme': a.readme = v(); break;
      case '--stack-name': a.stackName = v(); break;
      case '--quiet': a.quiet = true; break;
      case '--verbose': a.verbose = true; break;
      case '--param': {
        const p = v();
        const eq = p.indexOf('=');
        if (eq < 1) throw new TemplateError(`--param ${p}: expected K=V`);
        a.params[p.slice(0, eq)] = p.slice(eq + 1);
        break;
      }
      default: throw new TemplateError(`unknown argument ${k}`);
    }
  }
  if (!a.template) throw new TemplateError('--template is required');
  if (!a.calls.length) throw new TemplateError('--calls is required');
  return a;
}

export function readCalls(path) {
  const out = [];
  readFileSync(path, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim() || line.trimStart().startsWith('//')) return;
    let rec;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new TemplateError(`${path}:${i + 1}: not JSON: ${e.message}`);
    }
    for (const f of ['principal', 'service', 'operation']) {
      if (typeof rec[f] !== 'string') throw new TemplateError(`${path}:${i + 1}: record has no "${f}"`);
    }
    if (rec.expect !== undefined && rec.expect !== 'Allowed' && rec.expect !== 'Denied') {
      throw new TemplateError(`${path}:${i + 1}: expect must be "Allowed" or "Denied"`);
    }
    rec.source = `${path}:${i + 1}`;
    out.push(rec);
  });
  return out;
}

/** Runs the rehearsal; returns {rows, calls, failures} (failures: records not as expected). */
export async function run({ template, stackName, params, calls, readme, verbose }) {
  const stack = new Stack(template, { stackName, params });
  const rows = await rehearse(stack, calls, { readme, verbose });
  const decisions = callDecisions(rows);
  const failures = decisions.filter((d) => d.decision === 'Error' || d.decision !== (d.expect === 'Denied' ? 'Denied' : 'Allowed'));
  return { stack, rows, decisions, failures };
}

function pad(s, n) {
  s = String(s);
  return s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n);
}

export function formatTable(rows) {
  const lines = [];
  const head = [pad('call', 58), pad('authorization', 70), pad('principal', 11), pad('decision', 16), 'statement'];
  lines.push(head.join(' '));
  lines.push('-'.repeat(190));
  for (const r of rows) {
    const auth = `${r.action} ${r.resource}${r.implied ? ' (implied)' : ''}`;
    const st = r.decision === 'Error' ? r.error : r.deciding?.join(', ') || (r.decision === 'ImplicitlyDenied' ? 'no statement allows it' : '');
    lines.push([pad(r.label, 58), pad(auth, 70), pad(r.principal, 11), pad(r.decision, 16), st].join(' '));
    for (const n of r.notes ?? []) lines.push(' '.repeat(58) + ' note: ' + n);
  }
  return lines.join('\n');
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`rehearse: ${e.message}`);
    process.exit(2);
  }
  let result;
  try {
    const template = loadTemplateFile(args.template);
    const readmePath = args.readme ?? join(dirname(resolve(args.template)), 'README.md');
    const readme = existsSync(readmePath) ? readFileSync(readmePath, 'utf8') : undefined;
    const calls = args.calls.flatMap(readCalls);
    result = await run({ template, stackName: args.stackName, params: args.params, calls, readme, verbose: args.verbose });
  } catch (e) {
    if (e instanceof TemplateError) {
      console.error(`rehearse: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  const { rows, decisions, failures } = result;
  if (!args.quiet) console.log(formatTable(rows));
  const allowed = decisions.filter((d) => d.decision === 'Allowed').length;
  const denied = decisions.filter((d) => d.decision === 'Denied').length;
  const errors = decisions.filter((d) => d.decision === 'Error').length;
  console.log(`\n${decisions.length} calls, ${rows.length} authorizations: ${allowed} calls allowed, ${denied} denied, ${errors} not evaluable; ${failures.length} not as expected`);
  for (const f of failures) {
    const want = f.expect === 'Denied' ? 'Denied' : 'Allowed';
    const first = f.denied[0];
    const why = first ? ` (${first.action} ${first.resource}: ${first.decision}${first.error ? ': ' + first.error : ''})` : '';
    console.log(`  NOT AS EXPECTED: ${f.label} [${f.principal}] expected ${want}, got ${f.decision}${why}`);
  }
  if (args.json) {
    writeFileSync(args.json, JSON.stringify({
      template: args.template, stackName: result.stack.stackName, account: result.stack.account, region: result.stack.region,
      parameters: result.stack.params, calls: decisions, authorizations: rows,
      summary: { calls: decisions.length, authorizations: rows.length, allowed, denied, errors, notAsExpected: failures.length },
    }, null, 2));
  }
  process.exit(failures.length ? 1 : 0);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('rehearse.mjs')) {
  await main();
}
