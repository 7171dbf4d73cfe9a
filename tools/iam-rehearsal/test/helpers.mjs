import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callDecisions, rehearse } from '../lib/evaluate.mjs';
import { loadTemplateFile, Stack } from '../lib/template.mjs';
import { readCalls } from '../rehearse.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const TOOL = join(here, '..');
export const ROOT = join(TOOL, '..', '..');
export const TEMPLATE_PATH = join(ROOT, 'infra', 'template.yaml');
export const README = readFileSync(join(ROOT, 'infra', 'README.md'), 'utf8');

/** A fresh parsed copy of infra/template.yaml (callers may change it in memory). */
export const template = () => loadTemplateFile(TEMPLATE_PATH);
export const calls = (name) => readCalls(join(TOOL, 'calls', name));

/** Rehearses records; returns {rows, decisions} with decisions in record order. */
export async function rehearseCalls(records, { tpl = template(), params = {} } = {}) {
  const stack = new Stack(tpl, { params });
  const rows = await rehearse(stack, records, { readme: README });
  return { rows, decisions: callDecisions(rows) };
}

/** Removes the statement with this Sid from a role's inline policies (in memory). */
export function dropStatement(tpl, roleId, sid) {
  let n = 0;
  for (const p of tpl.Resources[roleId].Properties.Policies) {
    const before = p.PolicyDocument.Statement.length;
    p.PolicyDocument.Statement = p.PolicyDocument.Statement.filter((s) => s.Sid !== sid);
    n += before - p.PolicyDocument.Statement.length;
  }
  if (n !== 1) throw new Error(`${roleId} has ${n} statements ${sid}`);
  return tpl;
}
