// Evaluates authorizations with @cloud-copilot/iam-simulate against the policies a component
// holds (identity policies from the template, resource policies where AWS consults them).

import { createValidatedPolicy, validateResourcePolicy } from '@cloud-copilot/iam-policy';
import { runSimulation, runUnsafeSimulation } from '@cloud-copilot/iam-simulate';
import { expandCall, RecordError } from './expand.mjs';
import { FUNCTION_OF, identityPolicies, INSTANCE_COMPONENTS, principalArn } from './policies.mjs';

// Condition keys the template's policies may use that no AWS page documents. iam-simulate (like
// IAM's own policy validator) knows only documented keys and drops any other from the request
// context, so a statement that depends on one can never match here. Reported, never guessed.
const UNDOCUMENTED_KEYS = ['aws:ARN'];

/** Context keys every request of this principal carries ([GLOBAL] in expand.mjs). */
function principalContext(stack, call) {
  const { roleArn, sessionArn } = principalArn(stack, call.principal, call.caller?.instanceId);
  const ctx = {
    'aws:PrincipalArn': roleArn,
    'aws:PrincipalAccount': stack.account,
    'aws:PrincipalType': 'AssumedRole',
    'aws:SecureTransport': 'true',
    'aws:RequestedRegion': stack.region,
  };
  if (INSTANCE_COMPONENTS.has(call.principal)) {
    // Credentials of an instance profile carry the instance: ec2:SourceInstanceARN,
    // aws:EC2InstanceSourceVPC, aws:EC2InstanceSourcePrivateIPv4 ([GLOBAL];
    // https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html).
    const c = call.caller;
    if (!c?.instanceId) throw new RecordError(`${call.principal}: record has no caller.instanceId (instance credentials)`);
    ctx['ec2:SourceInstanceArn'] = `arn:${stack.partition}:ec2:${stack.region}:${stack.account}:instance/${c.instanceId}`;
    if (c.instanceVpc) ctx['aws:Ec2InstanceSourceVpc'] = c.instanceVpc;
    if (c.instancePrivateIp) ctx['aws:Ec2InstanceSourcePrivateIPv4'] = c.instancePrivateIp;
  }
  const fn = FUNCTION_OF[call.principal];
  if (fn) {
    // Lambda execution-role credentials carry lambda:SourceFunctionArn ([GLOBAL]).
    ctx['lambda:SourceFunctionArn'] = `arn:${stack.partition}:lambda:${stack.region}:${stack.account}:function:${stack.ref(fn)}`;
  }
  return { ctx, sessionArn, roleArn };
}

/** Where the request came from: through a VPC endpoint (aws:SourceVpc, aws:VpcSourceIp) or not (aws:SourceIp). */
function networkContext(call) {
  const n = call.network ?? {};
  const ctx = {};
  if (n.vpc) ctx['aws:SourceVpc'] = n.vpc;
  if (n.vpcSourceIp) ctx['aws:VpcSourceIp'] = n.vpcSourceIp;
  if (n.vpce) ctx['aws:SourceVpce'] = n.vpce;
  if (n.sourceIp) ctx['aws:SourceIp'] = n.sourceIp;
  return ctx;
}

function statementName(s, policyName) {
  const sid = s.statement?.sid?.() ?? s.explain?.identifier;
  return `${policyName ?? s.policyId ?? '?'}#${sid ?? s.statement?.index?.() ?? '?'}`;
}

function summarise(analysis, resourcePolicyName) {
  if (!analysis) return { deciding: [], denyStatements: [], allowStatements: [] };
  const id = (s) => statementName(s);
  const rp = (s) => statementName(s, resourcePolicyName ?? 'resource policy');
  const deny = [...(analysis.identityAnalysis?.denyStatements ?? []).map(id), ...(analysis.resourceAnalysis?.denyStatements ?? []).map(rp)];
  const allow = [...(analysis.identityAnalysis?.allowStatements ?? []).map(id), ...(analysis.resourceAnalysis?.allowStatements ?? []).map(rp)];
  const deciding = analysis.result === 'Allowed' ? allow : analysis.result === 'ExplicitlyDenied' ? deny : [];
  return { deciding, denyStatements: deny, allowStatements: allow };
}

function usesUndocumentedKey(policies, action) {
  const hits = [];
  for (const { name, policy } of policies) {
    for (const st of [policy.Statement].flat()) {
      const acts = [st.Action ?? []].flat();
      const re = (a) => new RegExp('^' + a.split('*').map((x) => x.replace(/[.?+^$()[\]{}|\\]/g, '\\$&')).join('.*') + '$', 'i');
      if (!acts.some((a) => re(a).test(action))) continue;
      const keys = Object.values(st.Condition ?? {}).flatMap((o) => Object.keys(o));
      for (const k of keys) {
        if (UNDOCUMENTED_KEYS.some((u) => u.toLowerCase() === k.toLowerCase())) hits.push(`${name}#${st.Sid ?? '?'} uses ${k}`);
      }
    }
  }
  return [...new Set(hits)];
}

/**
 * Evaluates one authorization. Returns {decision, deciding, ignoredContextKeys, error?}.
 * decision: Allowed | ExplicitlyDenied | ImplicitlyDenied | Error
 */
export async function evaluateAuthorization(stack, call, auth, policies, opts = {}) {
  const { ctx: pctx, sessionArn } = principalContext(stack, call);
  // Requests a service makes with the caller's credentials (forward access sessions) come from
  // the service, not from the caller's network.
  const context = { ...pctx, ...(auth.viaService ? {} : networkContext(call)), ...auth.context };
  const accountId = auth.resource.includes('::image/') ? '' : stack.account;
  const simulation = {
    request: {
      principal: sessionArn,
      action: auth.action,
      resource: { resource: auth.resource, accountId: accountId || stack.account },
      contextVariables: context,
    },
    identityPolicies: policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    ...(auth.resourcePolicy ? { resourcePolicy: auth.resourcePolicy } : {}),
  };
  const res = await runSimulation(simulation, { simulationMode: 'Strict' });
  if (res.resultType === 'error') {
    return { decision: 'Error', error: JSON.stringify(res.errors), deciding: [] };
  }
  if (res.resultType === 'wildcard') {
    return { decision: res.overallResult, deciding: [], ignoredContextKeys: [] };
  }
  const s = summarise(res.result.analysis, auth.resourcePolicyName);
  // iam-simulate 0.1.173 matches variable context keys only after a slash (aws:ResourceTag/K),
  // so it drops kms:EncryptionContext:K, a documented KMS key ([KMS-SAR]:
  // kms:EncryptionContext:${EncryptionContextKey}) that the image-build role's Deny depends on.
  // Then the same simulation runs again with the context as given (the library's unvalidated
  // entry point; policies and the request were validated by the run above). Its result is the
  // decision; that entry point reports no statements.
  const dropped = (res.result.ignoredContextKeys ?? []).filter((k) => /^kms:EncryptionContext:/i.test(k));
  if (dropped.length) {
    const ARRAY_KEYS = new Set(['aws:tagkeys', 'kms:encryptioncontextkeys']);
    const ctx = Object.fromEntries(Object.entries(context).map(([k, v]) => [k, ARRAY_KEYS.has(k.toLowerCase()) ? [v].flat() : Array.isArray(v) ? v[0] : v]));
    const resourcePolicy = simulation.resourcePolicy
      ? createValidatedPolicy(simulation.resourcePolicy, validateResourcePolicy, { name: auth.resourcePolicyName ?? 'resource policy' })
      : undefined;
    const decision = runUnsafeSimulation({ ...simulation, resourcePolicy, request: { ...simulation.request, contextVariables: ctx } }, {});
    return { decision, deciding: [`(re-evaluated with ${dropped.join(', ')}; no statement reported)`], ignoredContextKeys: [] };
  }
  return { decision: res.overallResult, deciding: s.deciding, denyStatements: s.denyStatements, ignoredContextKeys: res.result.ignoredContextKeys ?? [] };
}

/**
 * Evaluates every record. Returns rows: one per authorization, and one row with decision
 * "Error" for a record that cannot be expanded (unknown operation, missing state, ...).
 */
export async function rehearse(stack, calls, opts = {}) {
  const rows = [];
  const policyCache = new Map();
  for (const [i, call] of calls.entries()) {
    const label = call.label ?? `${call.service}:${call.operation}`;
    const callName = `${call.service}:${call.operation}`;
    let auths;
    let policies;
    try {
      if (!policyCache.has(call.principal)) policyCache.set(call.principal, identityPolicies(stack, call.principal, { readme: opts.readme }));
      policies = policyCache.get(call.principal);
      auths = expandCall(stack, call);
    } catch (e) {
      rows.push({ index: i, label, call: callName, principal: call.principal, action: '-', resource: '-', decision: 'Error', error: e.message, deciding: [] });
      continue;
    }
    for (const auth of auths) {
      let r;
      try {
        r = await evaluateAuthorization(stack, call, auth, policies, opts);
      } catch (e) {
        r = { decision: 'Error', error: e.message, deciding: [] };
      }
      const notes = [];
      if (r.decision !== 'Allowed') notes.push(...usesUndocumentedKey(policies, auth.action));
      if (r.ignoredContextKeys?.length && opts.verbose) notes.push(`ignored context keys: ${r.ignoredContextKeys.join(', ')}`);
      rows.push({
        index: i,
        label,
        call: callName,
        principal: call.principal,
        expect: call.expect,
        action: auth.action,
        resource: auth.resource,
        implied: !!auth.implied,
        why: auth.why,
        decision: r.decision,
        deciding: r.deciding,
        error: r.error,
        notes,
      });
    }
  }
  return rows;
}

/** The decision of a whole record: Allowed only if every authorization is. */
export function callDecisions(rows) {
  const by = new Map();
  for (const r of rows) {
    const cur = by.get(r.index) ?? { index: r.index, label: r.label, principal: r.principal, expect: r.expect, decision: 'Allowed', denied: [] };
    if (r.decision !== 'Allowed') {
      cur.decision = r.decision === 'Error' ? 'Error' : cur.decision === 'Error' ? 'Error' : 'Denied';
      cur.denied.push(r);
    }
    by.set(r.index, cur);
  }
  return [...by.values()];
}
