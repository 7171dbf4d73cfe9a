// The IAM rehearsal's tests: `node --test` in tools/iam-rehearsal (make iam-rehearsal).
// Every test name contains "iam". No mock of the evaluator: each decision below is what
// @cloud-copilot/iam-simulate returns for the policies resolved from infra/template.yaml.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { expandCall } from '../lib/expand.mjs';
import { identityPolicies } from '../lib/policies.mjs';
import { loadTemplateText, Stack, TemplateError } from '../lib/template.mjs';
import { calls, dropStatement, README, rehearseCalls, ROOT, template, TEMPLATE_PATH, TOOL } from './helpers.mjs';

const components = calls('components.jsonl');
const probes = calls('probes.jsonl');
const byLabel = (list, label) => {
  const r = list.find((c) => c.label === label);
  if (!r) throw new Error(`no record "${label}"`);
  return r;
};

// ------------------------------------------------------------------------------ template
describe('iam template resolution', () => {
  test('iam: roles resolve with the stack parameters (Sub, GetAtt, If, NoValue)', () => {
    const stack = new Stack(template());
    const runner = identityPolicies(stack, 'runner')[0].policy.Statement;
    const sids = runner.map((s) => s.Sid);
    assert.ok(sids.includes('DenyOutsideTheIssuingInstanceVpc'), 'BindRunnerCredentials=true keeps the deny');
    const jit = runner.find((s) => s.Sid === 'ReadAndDeleteOwnJitParameterOnly');
    assert.equal(jit.Resource, 'arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/i-*');
    assert.equal(jit.Condition.StringEquals['ssm:resourceTag/hangar:instance-arn'], '${ec2:SourceInstanceARN}');
    const scaler = identityPolicies(stack, 'scaler')[0].policy.Statement;
    assert.equal(scaler.find((s) => s.Sid === 'ResolveTheRunnerAmiParameter').Resource,
      'arn:aws:ssm:us-east-1:123456789012:parameter/hangar/ami/runner-arm64');
    assert.equal(scaler.find((s) => s.Sid === 'ListEachPoolsOpenJobs').Resource,
      'arn:aws:dynamodb:us-east-1:123456789012:table/hangar-JobLedgerTable-REHEARSAL/index/open-by-pool');
    assert.equal(scaler.find((s) => s.Sid === 'WriteOwnLogs').Resource,
      'arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/hangar-scaler:*');
  });

  test('iam: --param overrides a default and conditions follow it', () => {
    const stack = new Stack(template(), { params: { RunnerCredentialsVpcEndpointsOnly: 'false', JitParameterPrefix: '/x/jit' } });
    const runner = identityPolicies(stack, 'runner')[0].policy.Statement;
    assert.ok(!runner.some((s) => s.Sid?.startsWith('Deny')), 'the !If ... !Ref AWS::NoValue entries are gone');
    assert.equal(runner.find((s) => s.Sid === 'ReadAndDeleteOwnJitParameterOnly').Resource, 'arn:aws:ssm:us-east-1:123456789012:parameter/x/jit/i-*');
    assert.throws(() => new Stack(template(), { params: { NoSuchParameter: '1' } }), /declares no such parameter/);
    assert.throws(() => new Stack(template(), { params: { RunnerCredentialsVpcEndpointsOnly: 'maybe' } }), /not one of/);
  });

  test('iam: an unknown intrinsic function is an error, not dropped', () => {
    const tpl = template();
    tpl.Resources.WebhookRole.Properties.Policies[0].PolicyDocument.Statement[0].Resource = { 'Fn::GetAZs': '' };
    assert.throws(() => identityPolicies(new Stack(tpl), 'webhook'), (e) => e instanceof TemplateError && /Fn::GetAZs is not supported/.test(e.message));
    const tpl2 = template();
    tpl2.Resources.WebhookRole.Properties.Policies[0].PolicyDocument.Statement[0].Resource = { 'Fn::Sub': 'arn:${NotAThing}' };
    assert.throws(() => identityPolicies(new Stack(tpl2), 'webhook'), /references \$\{NotAThing\}/);
    const tpl3 = template();
    tpl3.Resources.WebhookRole.Properties.Policies[0].PolicyDocument.Statement[0].Resource = { 'Fn::GetAtt': ['HttpApi', 'ApiEndpoint'] };
    assert.throws(() => identityPolicies(new Stack(tpl3), 'webhook'), /is not modelled/);
  });

  test('iam: YAML short tags parse to their long forms', () => {
    const t = loadTemplateText('Resources:\n  A:\n    Type: X\n    Properties:\n      P: !Sub ["${a}-x", {a: !Ref AWS::Region}]\n      Q: !GetAtt B.Arn\n      R: !If [C, !Ref D, !Ref AWS::NoValue]\n');
    assert.deepEqual(t.Resources.A.Properties, {
      P: { 'Fn::Sub': ['${a}-x', { a: { Ref: 'AWS::Region' } }] },
      Q: { 'Fn::GetAtt': ['B', 'Arn'] },
      R: { 'Fn::If': ['C', { Ref: 'D' }, { Ref: 'AWS::NoValue' }] },
    });
  });
});

// ------------------------------------------------------------------------------ expansion
describe('iam call expansion', () => {
  test('iam: CreateFleet with the launch template expands to the checks AWS makes', () => {
    const stack = new Stack(template());
    const auths = expandCall(stack, byLabel(components, 'scaler: launch one spot runner (CreateFleet instant)'));
    const kinds = auths.map((a) => `${a.action} ${a.resource.replace(/^arn:aws:[a-z0-9]+:[a-z0-9-]*:\d*:/, '').replace(/\/.*/, '')}`);
    for (const want of [
      'ec2:CreateFleet fleet', 'ec2:CreateFleet instance', 'ec2:CreateFleet image', 'ec2:CreateFleet launch-template',
      'ec2:CreateFleet subnet', 'ec2:CreateFleet volume',
      'ec2:RunInstances instance', 'ec2:RunInstances image', 'ec2:RunInstances launch-template', 'ec2:RunInstances subnet',
      'ec2:RunInstances volume', 'ec2:RunInstances network-interface', 'ec2:RunInstances security-group',
      'ec2:RunInstances spot-instances-request',
      'ec2:CreateTags instance', 'ec2:CreateTags volume', 'ec2:CreateTags network-interface',
      'ssm:GetParameters parameter', 'iam:PassRole role',
    ]) assert.ok(kinds.includes(want), `missing ${want} in ${kinds.join(', ')}`);
    const tag = auths.find((a) => a.action === 'ec2:CreateTags' && a.resource.includes(':instance/'));
    assert.equal(tag.context['ec2:CreateAction'], 'CreateFleet');
    assert.equal(tag.context['aws:RequestTag/hangar:managed-by'], 'hangar');
    const pass = auths.find((a) => a.action === 'iam:PassRole');
    assert.equal(pass.resource, 'arn:aws:iam::123456789012:role/hangar-RunnerRole-REHEARSAL');
    assert.equal(pass.context['iam:PassedToService'], 'ec2.amazonaws.com');
    const ssm = auths.find((a) => a.action === 'ssm:GetParameters');
    assert.equal(ssm.resource, 'arn:aws:ssm:us-east-1:123456789012:parameter/hangar/ami/runner-arm64');
    assert.equal(auths.filter((a) => a.action === 'ec2:RunInstances' && a.resource.includes(':subnet/')).length, 2, 'one per override subnet');
  });

  test('iam: SecureString reads add kms:Decrypt through SSM with the parameter ARN as context', () => {
    const stack = new Stack(template());
    const [get, kms] = expandCall(stack, byLabel(components, 'runner: read its own JIT config'));
    assert.equal(get.action, 'ssm:GetParameter');
    assert.equal(kms.action, 'kms:Decrypt');
    assert.equal(kms.context['kms:ViaService'], 'ssm.us-east-1.amazonaws.com');
    assert.equal(kms.context['kms:EncryptionContext:PARAMETER_ARN'], get.resource);
  });

  test('iam: DynamoDB Query on the index is authorised on the index ARN', () => {
    const stack = new Stack(template());
    const [q] = expandCall(stack, byLabel(components, "scaler: a pool's open jobs (index)"));
    assert.equal(q.resource, 'arn:aws:dynamodb:us-east-1:123456789012:table/hangar-JobLedgerTable-REHEARSAL/index/open-by-pool');
  });

  test('iam: a record the evaluator cannot expand is an error row, never a pass', async () => {
    const { decisions, rows } = await rehearseCalls([
      { principal: 'scaler', service: 'ec2', operation: 'TerminateInstances', params: { InstanceIds: ['i-0123'] } },
      { principal: 'scaler', service: 'sqs', operation: 'PurgeQueue', params: { QueueUrl: 'x' } },
      { principal: 'nobody', service: 'sqs', operation: 'SendMessage', params: {} },
    ]);
    assert.deepEqual(decisions.map((d) => d.decision), ['Error', 'Error', 'Error']);
    assert.match(rows[0].error, /state.instances has no i-0123/);
    assert.match(rows[1].error, /not modelled/);
    assert.match(rows[2].error, /unknown principal/);
  });
});

// ------------------------------------------------------------------------------ real calls
describe('iam real calls of each component are allowed', async () => {
  const { decisions, rows } = await rehearseCalls(components);
  for (const d of decisions) {
    test(`iam allowed: ${d.label}`, () => {
      const why = d.denied.map((r) => `${r.action} ${r.resource}: ${r.decision}${r.error ? ' ' + r.error : ''}${r.notes?.length ? ' [' + r.notes.join('; ') + ']' : ''}`);
      assert.equal(d.decision, 'Allowed', why.join('\n'));
    });
  }
  test('iam: the CreateFleet checks are allowed by the statements meant for them', () => {
    const fleetRows = rows.filter((r) => r.label === 'scaler: launch one spot runner (CreateFleet instant)');
    const by = (action, frag) => fleetRows.find((r) => r.action === action && r.resource.includes(frag));
    assert.deepEqual(by('ssm:GetParameters', 'runner-arm64').deciding, ['ScalerRole/scaler#ResolveTheRunnerAmiParameter']);
    assert.deepEqual(by('iam:PassRole', 'RunnerRole').deciding, ['ScalerRole/scaler#PassOnlyTheRunnerRoleToEc2']);
    assert.deepEqual(by('ec2:RunInstances', ':image/').deciding, ['ScalerRole/scaler#LaunchOnlyPipelineImages']);
    assert.deepEqual(by('ec2:RunInstances', ':instance/').deciding, ['ScalerRole/scaler#LaunchOnlyTaggedInstances']);
    assert.deepEqual(by('ec2:CreateTags', ':instance/').deciding, ['ScalerRole/scaler#TagOnLaunch']);
  });
  test('iam: the runner reads its JIT config through its own tag condition', () => {
    const r = rows.find((x) => x.label === 'runner: read its own JIT config' && x.action === 'ssm:GetParameter');
    assert.deepEqual(r.deciding, ['RunnerRole/runner#ReadAndDeleteOwnJitParameterOnly']);
  });
});

// ------------------------------------------------------------------------------ probes
// Expected decision of each probe, and, for explicit denials, the statement that must decide.
const PROBE_EXPECTATIONS = {
  "probe: a runner reads another instance's JIT config": { action: 'ssm:GetParameter', decision: 'ImplicitlyDenied' },
  "probe: a runner deletes another instance's JIT config": { action: 'ssm:DeleteParameter', decision: 'ImplicitlyDenied' },
  'probe: a runner terminates another instance': { action: 'ec2:TerminateInstances', decision: 'ImplicitlyDenied' },
  'probe: a runner tags another instance': { action: 'ec2:CreateTags', decision: 'ImplicitlyDenied' },
  'probe: a runner sets another tag key on itself (hangar:lifecycle)': { action: 'ec2:CreateTags', decision: 'ImplicitlyDenied' },
  "probe: the runner's credentials used from another IP (outside AWS)": { action: 'ssm:GetParameter', decision: 'ExplicitlyDenied',
    deciding: ['RunnerRole/runner#DenyOutsideTheIssuingInstanceVpc', 'RunnerRole/runner#DenyFromAnyOtherAddressThanTheIssuingInstance'] },
  "probe: the runner's credentials used from another instance in the same VPC": { action: 'ec2:TerminateInstances', decision: 'ExplicitlyDenied',
    deciding: ['RunnerRole/runner#DenyFromAnyOtherAddressThanTheIssuingInstance'] },
  "probe: the runner's credentials used from another VPC": { action: 'ssm:DeleteParameter', decision: 'ExplicitlyDenied',
    deciding: ['RunnerRole/runner#DenyOutsideTheIssuingInstanceVpc'] },
  'probe: the webhook launches an instance': { action: 'ec2:CreateFleet', decision: 'ImplicitlyDenied' },
  'probe: the image-build role reads the GitHub App key': { action: 'ssm:GetParameter', decision: 'ExplicitlyDenied',
    deciding: ['ImageBuilderRole/no-hangar-secrets#DenyHangarParameters'] },
  'probe: the image-build role reads the webhook secret': { action: 'ssm:GetParameters', decision: 'ExplicitlyDenied',
    deciding: ['ImageBuilderRole/no-hangar-secrets#DenyHangarParameters'] },
  'probe: the image-build role reads a JIT config': { action: 'ssm:GetParameter', decision: 'ExplicitlyDenied',
    deciding: ['ImageBuilderRole/no-hangar-secrets#DenyHangarParameters'] },
  'probe: the image-build role reads /hangar by path': { action: 'ssm:GetParametersByPath', decision: 'ExplicitlyDenied',
    deciding: ['ImageBuilderRole/no-hangar-secrets#DenyPathReads'] },
  // Decided on kms:EncryptionContext:PARAMETER_ARN, which iam-simulate 0.1.173 only evaluates on
  // its unvalidated entry point (lib/evaluate.mjs): no statement is reported, so the test below
  // ("without DenyDecryptingSecureStrings ...") shows that statement is what denies it.
  'probe: the image-build role decrypts a SecureString directly': { action: 'kms:Decrypt', decision: 'ExplicitlyDenied' },
  'probe: the scaler terminates an instance Hangar did not launch': { action: 'ec2:TerminateInstances', decision: 'ImplicitlyDenied' },
  'probe: the scaler tags an instance Hangar did not launch': { action: 'ec2:CreateTags', decision: 'ImplicitlyDenied' },
  'probe: the provisioner terminates an instance Hangar did not launch': { action: 'ec2:TerminateInstances', decision: 'ImplicitlyDenied' },
  'probe: the scaler launches the placeholder base AMI (before the first build)': { action: 'ec2:CreateFleet', resource: ':image/', decision: 'ImplicitlyDenied' },
  'probe: the scaler launches an untagged instance': { action: 'ec2:CreateFleet', resource: ':instance/', decision: 'ImplicitlyDenied' },
  'probe: the provisioner deletes a JIT config': { action: 'ssm:DeleteParameter', decision: 'ImplicitlyDenied' },
};

describe('iam probes are denied', async () => {
  const { decisions, rows } = await rehearseCalls(probes);
  test('iam: every probe has an expectation', () => {
    assert.deepEqual(decisions.map((d) => d.label).sort(), Object.keys(PROBE_EXPECTATIONS).sort());
  });
  for (const d of decisions) {
    test(`iam denied: ${d.label}`, () => {
      const want = PROBE_EXPECTATIONS[d.label];
      assert.equal(d.decision, 'Denied', `ALLOWED: ${d.label} (a real finding: the template allows it)`);
      const r = rows.find((x) => x.index === d.index && x.action === want.action && (!want.resource || x.resource.includes(want.resource)));
      assert.ok(r, `no ${want.action} authorization for ${d.label}`);
      assert.equal(r.decision, want.decision);
      if (want.deciding) assert.deepEqual(r.deciding, want.deciding);
    });
  }
});

describe('iam probes depend on the template, not on the evaluator', () => {
  test('iam: without RunnerCredentialsVpcEndpointsOnly the stolen-credential probe is allowed (the deny is what stops it)', async () => {
    const probe = byLabel(probes, "probe: the runner's credentials used from another IP (outside AWS)");
    const bound = await rehearseCalls([probe]);
    const open = await rehearseCalls([probe], { params: { RunnerCredentialsVpcEndpointsOnly: 'false' } });
    assert.equal(bound.decisions[0].decision, 'Denied');
    assert.equal(open.decisions[0].decision, 'Allowed');
  });
  test('iam: without the image-build Deny statements the App key is readable (AmazonSSMManagedInstanceCore allows it)', async () => {
    const probe = byLabel(probes, 'probe: the image-build role reads the GitHub App key');
    const tpl = template();
    delete tpl.Resources.ImageBuilderRole.Properties.Policies;
    const { decisions, rows } = await rehearseCalls([probe], { tpl });
    assert.equal(decisions[0].decision, 'Allowed');
    assert.deepEqual(rows.find((r) => r.action === 'ssm:GetParameter').deciding, ['AmazonSSMManagedInstanceCore (AWS managed)#1']);
  });
});

test('iam: without DenyDecryptingSecureStrings the image-build role may decrypt SecureStrings (the aws/ssm key policy allows it)', async () => {
  const probe = byLabel(probes, 'probe: the image-build role decrypts a SecureString directly');
  const tpl = template();
  const doc = tpl.Resources.ImageBuilderRole.Properties.Policies[0].PolicyDocument;
  doc.Statement = doc.Statement.filter((s) => s.Sid !== 'DenyDecryptingSecureStrings');
  assert.equal((await rehearseCalls([probe])).decisions[0].decision, 'Denied');
  assert.equal((await rehearseCalls([probe], { tpl })).decisions[0].decision, 'Allowed');
});

// ------------------------------------------------------------------------------ proposed fixes
// The template fixes this rehearsal proposes (see README.md, "Findings"), applied in memory:
// with them every component call is allowed and every probe is still denied.
// The runner role once said "itself" with aws:ARN, which no AWS page documents as a condition
// key; the rehearsal found it (its self-termination and its spot tag were denied). This keeps
// that finding: with the old condition back, both calls are denied again.
function withUndocumentedArnKey() {
  const tpl = template();
  const doc = tpl.Resources.RunnerRole.Properties.Policies[0].PolicyDocument;
  let changed = 0;
  for (const st of doc.Statement) {
    if (st.Sid === 'TerminateItselfOnly' || st.Sid === 'ReportOwnSpotInterruptionOnly') {
      delete st.Condition.StringEquals['ec2:SourceInstanceARN'];
      st.Condition.StringEquals['aws:ARN'] = '${ec2:SourceInstanceARN}';
      changed += 1;
    }
  }
  assert.equal(changed, 2, 'both self-only statements found');
  return tpl;
}

describe('iam runner self-only statements', () => {
  const selfCalls = () => components.filter((c) => c.principal === 'runner' && c.service === 'ec2'
    && ['TerminateInstances', 'CreateTags'].includes(c.operation));
  test('iam: keyed on the undocumented aws:ARN, a runner can neither terminate nor tag itself', async () => {
    const calls = selfCalls();
    assert.ok(calls.length >= 2, 'the runner terminates and tags itself in the component calls');
    const { decisions } = await rehearseCalls(calls, { tpl: withUndocumentedArnKey() });
    assert.deepEqual(decisions.map((d) => d.decision), calls.map(() => 'Denied'));
  });
  test('iam: keyed on ec2:InstanceID, the same calls are allowed', async () => {
    const calls = selfCalls();
    const { decisions } = await rehearseCalls(calls, { tpl: template() });
    assert.deepEqual(decisions.map((d) => d.decision), calls.map(() => 'Allowed'));
  });
});

// ------------------------------------------------------------------------------ grant removal
describe('iam rehearsal fails when a grant is removed', () => {
  const fleetCall = () => byLabel(components, 'scaler: launch one spot runner (CreateFleet instant)');

  test("iam: without the scaler's ssm:GetParameters on the AMI parameter, CreateFleet is denied", async () => {
    const tpl = dropStatement(template(), 'ScalerRole', 'ResolveTheRunnerAmiParameter');
    const { decisions, rows } = await rehearseCalls([fleetCall()], { tpl });
    assert.equal(decisions[0].decision, 'Denied');
    const denied = rows.filter((r) => r.decision !== 'Allowed');
    assert.deepEqual(denied.map((r) => [r.action, r.resource, r.decision, r.implied]),
      [['ssm:GetParameters', 'arn:aws:ssm:us-east-1:123456789012:parameter/hangar/ami/runner-arm64', 'ImplicitlyDenied', true]]);
  });

  test('iam: the CLI exits non-zero on that template and zero on the real one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'iam-rehearsal-'));
    const tpl = dropStatement(template(), 'ScalerRole', 'ResolveTheRunnerAmiParameter');
    writeFileSync(join(dir, 'template.yaml'), stringify(tpl));
    copyFileSync(join(ROOT, 'infra', 'README.md'), join(dir, 'README.md'));
    const calls = join(dir, 'fleet.jsonl');
    writeFileSync(calls, JSON.stringify(fleetCall()) + '\n');
    const cli = (t) => spawnSync(process.execPath, [join(TOOL, 'rehearse.mjs'), '--template', t, '--calls', calls, '--json', join(dir, 'out.json')], { encoding: 'utf8' });
    const broken = cli(join(dir, 'template.yaml'));
    assert.equal(broken.status, 1, broken.stdout + broken.stderr);
    assert.match(broken.stdout, /ssm:GetParameters arn:aws:ssm:us-east-1:123456789012:parameter\/hangar\/ami\/runner-arm64/);
    assert.match(broken.stdout, /NOT AS EXPECTED: scaler: launch one spot runner/);
    const out = JSON.parse(readFileSync(join(dir, 'out.json'), 'utf8'));
    assert.equal(out.summary.notAsExpected, 1);
    assert.equal(out.authorizations.find((a) => a.action === 'ssm:GetParameters').decision, 'ImplicitlyDenied');
    const ok = cli(TEMPLATE_PATH);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  });
});

// ------------------------------------------------------------------------------ CLI
describe('iam CLI', () => {
  const cli = (...args) => spawnSync(process.execPath, [join(TOOL, 'rehearse.mjs'), ...args], { encoding: 'utf8', cwd: ROOT });
  test('iam: probes with expect=Denied pass the CLI, and a probe marked Allowed fails it', () => {
    const r = cli('--template', 'infra/template.yaml', '--calls', 'tools/iam-rehearsal/calls/probes.jsonl', '--quiet');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /20 calls, \d+ authorizations: 0 calls allowed, 20 denied, 0 not evaluable; 0 not as expected/);
    const dir = mkdtempSync(join(tmpdir(), 'iam-rehearsal-'));
    const f = join(dir, 'p.jsonl');
    writeFileSync(f, JSON.stringify({ ...probes[0], expect: undefined }) + '\n');
    assert.equal(cli('--template', 'infra/template.yaml', '--calls', f).status, 1);
  });
  test('iam: bad input exits 2 with a message', () => {
    const dir = mkdtempSync(join(tmpdir(), 'iam-rehearsal-'));
    const f = join(dir, 'bad.jsonl');
    writeFileSync(f, '{"principal": "scaler"}\n');
    const r = cli('--template', 'infra/template.yaml', '--calls', f);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /record has no "service"/);
    assert.equal(cli('--calls', f).status, 2);
    const p = cli('--template', 'infra/template.yaml', '--calls', 'tools/iam-rehearsal/calls/probes.jsonl', '--param', 'Nope=1');
    assert.equal(p.status, 2);
    assert.match(p.stderr, /declares no such parameter/);
  });
});

// The operator policy is read from infra/README.md: it must be there.
test('iam: the operator policy comes from infra/README.md', () => {
  const stack = new Stack(template());
  const [op] = identityPolicies(stack, 'operator', { readme: README });
  assert.equal(op.policy.Statement[0].Resource, 'arn:aws:dynamodb:us-east-1:123456789012:table/hangar-JobLedgerTable-REHEARSAL/index/open-by-pool');
});
