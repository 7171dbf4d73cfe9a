// The policies each Hangar component holds, and the resource policies AWS consults, taken from
// infra/template.yaml (resolved by template.mjs) and, for AWS managed policies and keys, from the
// fixtures in ../fixtures (each with the documentation page it was taken from).

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TemplateError } from './template.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const FIXTURES = join(here, '..', 'fixtures');

/** Component name -> the template's role (or, for the operator, the README's documented policy). */
export const COMPONENT_ROLES = {
  webhook: 'WebhookRole',
  scaler: 'ScalerRole',
  provisioner: 'ProvisionerRole',
  runner: 'RunnerRole',
  'image-build': 'ImageBuilderRole',
  operator: null,
};

/** Components whose credentials are EC2 instance-profile credentials. */
export const INSTANCE_COMPONENTS = new Set(['runner', 'image-build']);

/** Components that run as Lambda functions (and their function resources). */
export const FUNCTION_OF = {
  webhook: 'WebhookFunction',
  scaler: 'ScalerFunction',
  provisioner: 'ProvisionerFunction',
};

function managedPolicy(arn, stack) {
  const name = arn.split('/').pop();
  let fx;
  try {
    fx = JSON.parse(readFileSync(join(FIXTURES, 'managed-policies', `${name}.json`), 'utf8'));
  } catch {
    throw new TemplateError(
      `managed policy ${arn}: no fixture tools/iam-rehearsal/fixtures/managed-policies/${name}.json ` +
        '(add its documented JSON with the source URL)',
    );
  }
  const want = arn.replace(`arn:${stack.partition}:`, 'arn:aws:');
  if (fx.arn !== want) throw new TemplateError(`fixture ${name}.json is for ${fx.arn}, not ${want}`);
  return { name: `${name} (AWS managed)`, policy: fx.document, source: fx.source };
}

/** The identity policies of one component, as iam-simulate wants them. */
export function identityPolicies(stack, component, opts = {}) {
  if (!(component in COMPONENT_ROLES)) {
    throw new TemplateError(`unknown principal "${component}" (one of ${Object.keys(COMPONENT_ROLES).join(', ')})`);
  }
  const roleId = COMPONENT_ROLES[component];
  if (roleId === null) return [operatorPolicy(stack, opts.readme)];
  const props = stack.properties(roleId);
  const out = [];
  for (const p of props.Policies ?? []) {
    out.push({ name: `${roleId}/${p.PolicyName}`, policy: p.PolicyDocument });
  }
  for (const arn of props.ManagedPolicyArns ?? []) out.push(managedPolicy(arn, stack));
  if (props.PermissionsBoundary) throw new TemplateError(`${roleId}: PermissionsBoundary is not modelled`);
  return out;
}

/** The role (and session) ARN a component's requests are signed with. */
export function principalArn(stack, component, sessionName) {
  const roleId = COMPONENT_ROLES[component];
  const roleName = roleId === null ? 'hangar-operator' : stack.ref(roleId);
  const session = sessionName ?? (roleId === null ? 'operator' : `${stack.stackName}-${component}`);
  return {
    roleArn: `arn:${stack.partition}:iam::${stack.account}:role/${roleName}`,
    sessionArn: `arn:${stack.partition}:sts::${stack.account}:assumed-role/${roleName}/${session}`,
  };
}

// The operator: infra/README.md documents the policy operators running `hangar status` need, as
// a JSON block with placeholders. The rehearsal evaluates that very block, so the README and the
// template cannot drift apart unnoticed.
export function operatorPolicy(stack, readmeText) {
  if (!readmeText) throw new TemplateError('operator: pass the text of infra/README.md (readme option)');
  const at = readmeText.indexOf('**Operators running `hangar status`**');
  if (at < 0) throw new TemplateError('operator: infra/README.md has no "Operators running `hangar status`" section');
  const m = readmeText.slice(at).match(/```json\n([\s\S]*?)```/);
  if (!m) throw new TemplateError('operator: no ```json policy block in the operators section of infra/README.md');
  const text = m[1]
    .replaceAll('HANGAR_KEY_ARN', stack.getAtt('HangarKey', 'Arn'))
    .replaceAll('REGION', stack.region)
    .replaceAll('ACCOUNT', stack.account)
    .replaceAll('TABLE', stack.ref('JobLedgerTable'))
    .replaceAll('STACK', stack.stackName);
  let policy;
  try {
    policy = JSON.parse(text);
  } catch (e) {
    throw new TemplateError(`operator: the README's policy block is not JSON: ${e.message}`);
  }
  return { name: 'infra/README.md operator policy', policy };
}

// ---------------------------------------------------------------- KMS keys
/** The AWS managed aws/ssm key: ARN and key policy (fixture). */
export function awsSsmKey(stack) {
  const fx = JSON.parse(readFileSync(join(FIXTURES, 'key-policies', 'aws-ssm.json'), 'utf8'));
  const doc = JSON.parse(
    JSON.stringify(fx.document).replaceAll('${ACCOUNT}', stack.account).replaceAll('${REGION}', stack.region),
  );
  return {
    arn: `arn:${stack.partition}:kms:${stack.region}:${stack.account}:key/${fx.keyId}`,
    policy: doc,
    name: 'aws/ssm key policy (AWS managed)',
  };
}

/**
 * Resolves a KeyId as a template or request names it (key id, key ARN, alias name, alias ARN,
 * absent = AWS managed key of the service) to {arn, policy, name}.
 */
export function kmsKey(stack, keyId, managedAlias) {
  if (keyId === undefined || keyId === null || keyId === `alias/${managedAlias}`) {
    if (managedAlias === 'aws/ssm') return awsSsmKey(stack);
    throw new TemplateError(`AWS managed key alias/${managedAlias} is not modelled`);
  }
  for (const id of stack.resourcesOfType('AWS::KMS::Key')) {
    const arn = stack.getAtt(id, 'Arn');
    const ref = stack.ref(id);
    const aliases = stack
      .resourcesOfType('AWS::KMS::Alias')
      .filter((a) => {
        const p = stack.properties(a);
        return p.TargetKeyId === ref || p.TargetKeyId === arn;
      })
      .map((a) => stack.properties(a).AliasName);
    const aliasArns = aliases.map((a) => `arn:${stack.partition}:kms:${stack.region}:${stack.account}:${a}`);
    if ([arn, ref, ...aliases, ...aliasArns].includes(keyId)) {
      return { arn, policy: stack.properties(id).KeyPolicy, name: `${id} key policy` };
    }
  }
  throw new TemplateError(`KMS key ${keyId} is not defined by the template`);
}

// ---------------------------------------------------------------- SQS queues
/** Finds the template's queue for a queue URL; with its ARN, key and queue policy. */
export function queueByUrl(stack, url) {
  for (const id of stack.resourcesOfType('AWS::SQS::Queue')) {
    if (!stack.exists(id) || stack.ref(id) !== url) continue;
    const props = stack.properties(id);
    const arn = stack.getAtt(id, 'Arn');
    // AWS::SQS::QueuePolicy applies one document to each listed queue.
    const policies = stack
      .resourcesOfType('AWS::SQS::QueuePolicy')
      .filter((p) => stack.exists(p))
      .map((p) => ({ id: p, props: stack.properties(p) }))
      .filter((p) => (p.props.Queues ?? []).includes(url));
    if (policies.length > 1) throw new TemplateError(`queue ${id} has ${policies.length} queue policies; SQS keeps one`);
    const resourcePolicy = policies.length ? policies[0].props.PolicyDocument : undefined;
    const resourcePolicyName = policies.length ? `${policies[0].id} (queue policy)` : undefined;
    let key = null;
    if (props.KmsMasterKeyId !== undefined) key = kmsKey(stack, props.KmsMasterKeyId, 'aws/sqs');
    else if (props.SqsManagedSseEnabled === false) key = null;
    return { id, arn, key, resourcePolicy, resourcePolicyName };
  }
  throw new TemplateError(`queue URL ${url} is not a queue of the template (stack ${stack.stackName})`);
}

// ---------------------------------------------------------------- DynamoDB tables
export function tableByName(stack, name) {
  for (const id of stack.resourcesOfType('AWS::DynamoDB::Table')) {
    if (!stack.exists(id) || stack.ref(id) !== name) continue;
    const props = stack.properties(id);
    const sse = props.SSESpecification;
    let key = null;
    if (sse?.SSEEnabled && sse.SSEType === 'KMS') {
      if (sse.KMSMasterKeyId === undefined) throw new TemplateError(`${id}: SSE with the AWS managed aws/dynamodb key is not modelled`);
      key = kmsKey(stack, sse.KMSMasterKeyId, 'aws/dynamodb');
    }
    const indexes = (props.GlobalSecondaryIndexes ?? []).concat(props.LocalSecondaryIndexes ?? []).map((i) => i.IndexName);
    return { id, arn: stack.getAtt(id, 'Arn'), key, indexes };
  }
  throw new TemplateError(`table ${name} is not a table of the template (stack ${stack.stackName})`);
}
