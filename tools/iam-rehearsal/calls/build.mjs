// Writes components.jsonl and probes.jsonl: hand-written call records in the recorder's format
// (README.md), mirroring what the code does. Run `node calls/build.mjs` after editing; the files
// are committed so the CLI and the tests read them as the fault proxy's output would be read.
//
// Where each call comes from (crates/ and ami/ at the time of writing):
//   webhook:     crates/webhook/src/main.rs (SsmConfigSource, SqsScaleQueue, DynamoLedger)
//   scaler:      crates/scaler/src/main.rs wiring: hangar_aws::{ssm, sqs, dynamo, launch_log, ec2},
//                hangar_scaler::lookup (DescribeInstances); Lambda's SQS event source and logs
//   provisioner: the same binary (crates/scaler/src/provisioner.rs): SsmJitStore::put, Ec2Fleet::terminate
//   runner:      ami/boot-agent/hangar-boot-agent.sh (aws ssm get-parameter/delete-parameter,
//                aws ec2 create-tags/terminate-instances), amazon-cloudwatch-agent.json
//   operator:    `hangar status` (infra/README.md's operator policy)

import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const ACCOUNT = '123456789012';
const VPC = 'vpc-0a11ce0000000000a';
const SUBNET_A = 'subnet-0a11ce0000000001a';
const SUBNET_B = 'subnet-0a11ce0000000002b';
const SCALE_Q = `https://sqs.us-east-1.amazonaws.com/${ACCOUNT}/hangar-scale.fifo`;
const PROVISION_Q = `https://sqs.us-east-1.amazonaws.com/${ACCOUNT}/hangar-provision`;
const TABLE = 'hangar-JobLedgerTable-REHEARSAL';
const CONFIG = '/hangar/hangar/config';
const APP_KEY = '/hangar/github-app-private-key';
const WEBHOOK_SECRET = '/hangar/webhook-secret';
const AMI_PARAM = '/hangar/ami/runner-arm64';
const HANGAR_AMI = 'ami-0ha0gar00000000a1';
const BASE_AMI = 'ami-0a12023base000001';
const ME = 'i-0a1b2c3d4e5f60001';
const OTHER = 'i-0a1b2c3d4e5f60002';
const FOREIGN = 'i-0f0f0f0f0f0f0f0f0';
const ME_IP = '10.42.1.17';
const LAMBDA_IP = '198.51.100.20';
const instanceArn = (id) => `arn:aws:ec2:us-east-1:${ACCOUNT}:instance/${id}`;

const lambdaNet = { sourceIp: LAMBDA_IP };
const runnerCaller = (id = ME, ip = ME_IP) => ({ instanceId: id, instanceVpc: VPC, instancePrivateIp: ip });
const viaEndpoint = (ip = ME_IP) => ({ vpc: VPC, vpcSourceIp: ip, vpce: 'vpce-0a11ce00000000001' });

const hangarTags = (extra = {}) => ({ 'hangar:managed-by': 'hangar', 'hangar:pool': 'default', 'hangar:lifecycle': 'idle', ...extra });
const jitState = (id) => ({
  [`/hangar/jit/${id}`]: {
    type: 'SecureString',
    tags: { 'hangar:instance-id': id, 'hangar:pool': 'default', 'hangar:managed-by': 'hangar', 'hangar:instance-arn': instanceArn(id) },
  },
});
const secrets = {
  [APP_KEY]: { type: 'SecureString', tags: {} },
  [WEBHOOK_SECRET]: { type: 'SecureString', tags: {} },
};
const launchState = (image = HANGAR_AMI, imageTags = { 'hangar:managed-by': 'hangar', 'hangar:stack': 'hangar' }) => ({
  launchTemplates: { 'lt-0e2e0000000000001': { name: 'hangar-runner' } },
  parameters: { [AMI_PARAM]: { type: 'String', value: image } },
  images: { [image]: { owner: image === BASE_AMI ? '137112412989' : ACCOUNT, tags: imageTags } },
  subnets: { [SUBNET_A]: { vpc: VPC }, [SUBNET_B]: { vpc: VPC } },
});
const fleet = (market, tags) => ({
  Type: 'instant',
  LaunchTemplateConfigs: [{
    LaunchTemplateSpecification: { LaunchTemplateId: 'lt-0e2e0000000000001', Version: '$Latest' },
    Overrides: [
      { InstanceType: 'm7g.large', SubnetId: SUBNET_A },
      { InstanceType: 'c7g.large', SubnetId: SUBNET_B },
    ],
  }],
  TargetCapacitySpecification: { TotalTargetCapacity: 1, DefaultTargetCapacityType: market },
  // Ec2Fleet::tag_specs: instance and volume, the same tags.
  TagSpecifications: ['instance', 'volume'].map((rt) => ({
    ResourceType: rt,
    Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
  })),
});
const launchTags = { 'hangar:pool': 'default', 'hangar:lifecycle': 'pending', 'hangar:launch-reason': 'queued-job', 'hangar:managed-by': 'hangar', 'hangar:job-id': '4242' };
const kv = (o) => Object.entries(o).map(([Key, Value]) => ({ Key, Value }));

// Calls the Lambda service makes with each function's role: the environment's KMS decrypt at
// init, the function's log stream, and (for SQS-triggered functions) the event source's polling.
function lambdaPlumbing(principal, fn, queue) {
  const out = [
    { label: `${principal}: Lambda decrypts the environment (HangarKey)`, service: 'kms', operation: 'Decrypt',
      params: { KeyId: 'alias/hangar', EncryptionContext: { LambdaFunctionName: fn } } },
    { label: `${principal}: Lambda creates the log stream`, service: 'logs', operation: 'CreateLogStream',
      params: { logGroupName: `/aws/lambda/${fn}`, logStreamName: '2026/01/01/[$LATEST]0123456789abcdef' } },
    { label: `${principal}: Lambda writes the log (EMF metrics too)`, service: 'logs', operation: 'PutLogEvents',
      params: { logGroupName: `/aws/lambda/${fn}`, logStreamName: '2026/01/01/[$LATEST]0123456789abcdef' } },
  ];
  if (queue) {
    out.push(
      { label: `${principal}: event source polls its queue`, service: 'sqs', operation: 'ReceiveMessage', params: { QueueUrl: queue } },
      { label: `${principal}: event source deletes what succeeded`, service: 'sqs', operation: 'DeleteMessageBatch', params: { QueueUrl: queue } },
      { label: `${principal}: event source reads the queue's attributes`, service: 'sqs', operation: 'GetQueueAttributes', params: { QueueUrl: queue } },
    );
  }
  return out.map((c) => ({ principal, network: lambdaNet, ...c }));
}

const components = [
  // ------------------------------------------------------------ webhook
  ...lambdaPlumbing('webhook', 'hangar-webhook'),
  { principal: 'webhook', label: 'webhook: read the pool configuration', service: 'ssm', operation: 'GetParameter',
    params: { Name: CONFIG, WithDecryption: true }, network: lambdaNet },
  { principal: 'webhook', label: 'webhook: read the webhook secret', service: 'ssm', operation: 'GetParameter',
    params: { Name: WEBHOOK_SECRET, WithDecryption: true }, state: { parameters: secrets }, network: lambdaNet },
  { principal: 'webhook', label: 'webhook: enqueue the job event', service: 'sqs', operation: 'SendMessage',
    params: { QueueUrl: SCALE_Q, MessageGroupId: 'default', MessageDeduplicationId: 'delivery-1' }, network: lambdaNet },
  ...['PutItem', 'UpdateItem', 'GetItem'].map((op) => ({ principal: 'webhook', label: `webhook: ledger ${op}`, service: 'dynamodb', operation: op,
    params: { TableName: TABLE }, network: lambdaNet })),

  // ------------------------------------------------------------ scaler
  ...lambdaPlumbing('scaler', 'hangar-scaler', SCALE_Q),
  { principal: 'scaler', label: 'scaler: read the pool configuration', service: 'ssm', operation: 'GetParameter',
    params: { Name: CONFIG, WithDecryption: true }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: read the GitHub App key', service: 'ssm', operation: 'GetParameter',
    params: { Name: APP_KEY, WithDecryption: true }, state: { parameters: secrets }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: re-queue to the scale queue', service: 'sqs', operation: 'SendMessage',
    params: { QueueUrl: SCALE_Q }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: hand launched instances to the provisioner', service: 'sqs', operation: 'SendMessageBatch',
    params: { QueueUrl: PROVISION_Q }, network: lambdaNet },
  ...['PutItem', 'UpdateItem', 'GetItem'].map((op) => ({ principal: 'scaler', label: `scaler: ledger ${op}`, service: 'dynamodb', operation: op,
    params: { TableName: TABLE }, network: lambdaNet })),
  { principal: 'scaler', label: 'scaler: consistent re-read of listed jobs', service: 'dynamodb', operation: 'BatchGetItem',
    params: { TableNames: [TABLE] }, network: lambdaNet },
  { principal: 'scaler', label: "scaler: a pool's open jobs (index)", service: 'dynamodb', operation: 'Query',
    params: { TableName: TABLE, IndexName: 'open-by-pool' }, network: lambdaNet },
  { principal: 'scaler', label: "scaler: the pool's instances", service: 'ec2', operation: 'DescribeInstances', params: {}, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: launch one spot runner (CreateFleet instant)', service: 'ec2', operation: 'CreateFleet',
    params: fleet('spot', launchTags), state: launchState(), network: lambdaNet },
  { principal: 'scaler', label: 'scaler: launch on-demand fallback (CreateFleet instant)', service: 'ec2', operation: 'CreateFleet',
    params: fleet('on-demand', { ...launchTags, 'hangar:job-id': undefined }), state: launchState(), network: lambdaNet },
  { principal: 'scaler', label: 'scaler: mark a runner busy', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [OTHER], Tags: kv({ 'hangar:lifecycle': 'busy', 'hangar:job-id': '4242' }) },
    state: { instances: { [OTHER]: { tags: hangarTags() } } }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: clear the job tag', service: 'ec2', operation: 'DeleteTags',
    params: { Resources: [OTHER], Tags: [{ Key: 'hangar:job-id' }] },
    state: { instances: { [OTHER]: { tags: hangarTags({ 'hangar:job-id': '4242' }) } } }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: record a spot interruption', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [OTHER], Tags: kv({ 'hangar:interrupted': 'true' }) },
    state: { instances: { [OTHER]: { tags: hangarTags({ 'hangar:lifecycle': 'busy' }) } } }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: terminate an idle runner', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [OTHER] }, state: { instances: { [OTHER]: { tags: hangarTags() } } }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler (earmark planner): store a JIT config', service: 'ssm', operation: 'PutParameter',
    params: { Name: `/hangar/jit/${OTHER}`, Type: 'SecureString', Tier: 'Standard', Overwrite: false,
      Tags: kv(jitState(OTHER)[`/hangar/jit/${OTHER}`].tags) }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: delete a stale JIT config', service: 'ssm', operation: 'DeleteParameter',
    params: { Name: `/hangar/jit/${OTHER}` }, state: { parameters: jitState(OTHER) }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: delete stale JIT configs (batch)', service: 'ssm', operation: 'DeleteParameters',
    params: { Names: [`/hangar/jit/${OTHER}`, `/hangar/jit/${ME}`] }, state: { parameters: { ...jitState(OTHER), ...jitState(ME) } }, network: lambdaNet },
  { principal: 'scaler', label: 'scaler: list JIT configs', service: 'ssm', operation: 'DescribeParameters', params: {}, network: lambdaNet },

  // ------------------------------------------------------------ provisioner
  ...lambdaPlumbing('provisioner', 'hangar-provisioner', PROVISION_Q),
  { principal: 'provisioner', label: 'provisioner: pace a failed message', service: 'sqs', operation: 'ChangeMessageVisibility',
    params: { QueueUrl: PROVISION_Q }, network: lambdaNet },
  { principal: 'provisioner', label: 'provisioner: read the pool configuration', service: 'ssm', operation: 'GetParameter',
    params: { Name: CONFIG, WithDecryption: true }, network: lambdaNet },
  { principal: 'provisioner', label: 'provisioner: read the GitHub App key', service: 'ssm', operation: 'GetParameter',
    params: { Name: APP_KEY, WithDecryption: true }, state: { parameters: secrets }, network: lambdaNet },
  { principal: 'provisioner', label: "provisioner: store an instance's JIT config (create, tagged)", service: 'ssm', operation: 'PutParameter',
    params: { Name: `/hangar/jit/${ME}`, Type: 'SecureString', Tier: 'Standard', Overwrite: false, Tags: kv(jitState(ME)[`/hangar/jit/${ME}`].tags) },
    network: lambdaNet },
  { principal: 'provisioner', label: 'provisioner: overwrite an existing JIT config', service: 'ssm', operation: 'PutParameter',
    params: { Name: `/hangar/jit/${ME}`, Type: 'SecureString', Tier: 'Standard', Overwrite: true }, state: { parameters: jitState(ME) }, network: lambdaNet },
  { principal: 'provisioner', label: 'provisioner: re-tag the overwritten JIT config', service: 'ssm', operation: 'AddTagsToResource',
    params: { ResourceType: 'Parameter', ResourceId: `/hangar/jit/${ME}`, Tags: kv(jitState(ME)[`/hangar/jit/${ME}`].tags) },
    state: { parameters: jitState(ME) }, network: lambdaNet },
  { principal: 'provisioner', label: 'provisioner: terminate an instance it could not provision', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [ME] }, state: { instances: { [ME]: { tags: hangarTags({ 'hangar:lifecycle': 'pending' }) } } }, network: lambdaNet },

  // ------------------------------------------------------------ runner (boot agent, CloudWatch agent)
  { principal: 'runner', label: 'runner: read its own JIT config', service: 'ssm', operation: 'GetParameter',
    params: { Name: `/hangar/jit/${ME}`, WithDecryption: true }, state: { parameters: jitState(ME) }, caller: runnerCaller(), network: viaEndpoint() },
  { principal: 'runner', label: 'runner: delete its own JIT config', service: 'ssm', operation: 'DeleteParameter',
    params: { Name: `/hangar/jit/${ME}` }, state: { parameters: jitState(ME) }, caller: runnerCaller(), network: viaEndpoint() },
  { principal: 'runner', label: 'runner: report its own spot interruption', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [ME], Tags: kv({ 'hangar:interrupted': 'true' }) }, state: { instances: { [ME]: { tags: hangarTags({ 'hangar:lifecycle': 'busy' }) } } },
    caller: runnerCaller(), network: viaEndpoint() },
  { principal: 'runner', label: 'runner: terminate itself', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [ME] }, state: { instances: { [ME]: { tags: hangarTags({ 'hangar:lifecycle': 'busy' }) } } },
    caller: runnerCaller(), network: viaEndpoint() },
  ...['CreateLogStream', 'PutLogEvents', 'DescribeLogStreams'].map((op) => ({ principal: 'runner', label: `runner: CloudWatch agent ${op}`,
    service: 'logs', operation: op, params: { logGroupName: '/hangar/runners', logStreamName: `${ME}/boot-agent` }, caller: runnerCaller(), network: viaEndpoint() })),
  { principal: 'runner', label: 'runner: CloudWatch agent metrics', service: 'cloudwatch', operation: 'PutMetricData',
    params: { Namespace: 'CWAgent' }, caller: runnerCaller(), network: viaEndpoint() },

  // ------------------------------------------------------------ image build (what Image Builder's own agent does)
  { principal: 'image-build', label: 'image build: Image Builder log stream', service: 'logs', operation: 'CreateLogStream',
    params: { logGroupName: '/aws/imagebuilder/hangar-runner', logStreamName: '1.0.0/1' }, caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0', instanceVpc: VPC, instancePrivateIp: '10.42.9.9' }, network: { sourceIp: '203.0.113.50' } },

  // ------------------------------------------------------------ operator (`hangar status`)
  { principal: 'operator', label: "operator: a pool's open jobs", service: 'dynamodb', operation: 'Query', params: { TableName: TABLE, IndexName: 'open-by-pool' }, network: { sourceIp: '192.0.2.10' } },
  { principal: 'operator', label: 'operator: the listed jobs', service: 'dynamodb', operation: 'BatchGetItem', params: { TableNames: [TABLE] }, network: { sourceIp: '192.0.2.10' } },
  { principal: 'operator', label: 'operator: the instances', service: 'ec2', operation: 'DescribeInstances', params: {}, network: { sourceIp: '192.0.2.10' } },
  { principal: 'operator', label: 'operator: the configuration', service: 'ssm', operation: 'GetParameter', params: { Name: CONFIG, WithDecryption: true }, network: { sourceIp: '192.0.2.10' } },
];

// Drop undefined tags (the on-demand launch for several jobs has no job id).
for (const c of components) {
  for (const ts of c.params?.TagSpecifications ?? []) ts.Tags = ts.Tags.filter((t) => t.Value !== undefined);
}

const denied = (c) => ({ ...c, expect: 'Denied' });
const probes = [
  denied({ principal: 'runner', label: "probe: a runner reads another instance's JIT config", service: 'ssm', operation: 'GetParameter',
    params: { Name: `/hangar/jit/${OTHER}`, WithDecryption: true }, state: { parameters: jitState(OTHER) }, caller: runnerCaller(), network: viaEndpoint() }),
  denied({ principal: 'runner', label: "probe: a runner deletes another instance's JIT config", service: 'ssm', operation: 'DeleteParameter',
    params: { Name: `/hangar/jit/${OTHER}` }, state: { parameters: jitState(OTHER) }, caller: runnerCaller(), network: viaEndpoint() }),
  denied({ principal: 'runner', label: 'probe: a runner terminates another instance', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [OTHER] }, state: { instances: { [OTHER]: { tags: hangarTags() } } }, caller: runnerCaller(), network: viaEndpoint() }),
  denied({ principal: 'runner', label: 'probe: a runner tags another instance', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [OTHER], Tags: kv({ 'hangar:interrupted': 'true' }) }, state: { instances: { [OTHER]: { tags: hangarTags() } } }, caller: runnerCaller(), network: viaEndpoint() }),
  denied({ principal: 'runner', label: 'probe: a runner sets another tag key on itself (hangar:lifecycle)', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [ME], Tags: kv({ 'hangar:lifecycle': 'idle' }) }, state: { instances: { [ME]: { tags: hangarTags({ 'hangar:lifecycle': 'busy' }) } } }, caller: runnerCaller(), network: viaEndpoint() }),
  denied({ principal: 'runner', label: "probe: the runner's credentials used from another IP (outside AWS)", service: 'ssm', operation: 'GetParameter',
    params: { Name: `/hangar/jit/${ME}`, WithDecryption: true }, state: { parameters: jitState(ME) }, caller: runnerCaller(), network: { sourceIp: '203.0.113.9' } }),
  denied({ principal: 'runner', label: "probe: the runner's credentials used from another instance in the same VPC", service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [ME] }, state: { instances: { [ME]: { tags: hangarTags() } } }, caller: runnerCaller(), network: viaEndpoint('10.42.1.99') }),
  denied({ principal: 'runner', label: "probe: the runner's credentials used from another VPC", service: 'ssm', operation: 'DeleteParameter',
    params: { Name: `/hangar/jit/${ME}` }, state: { parameters: jitState(ME) }, caller: runnerCaller(), network: { vpc: 'vpc-0e0e0e0e0e0e0e0e0', vpcSourceIp: ME_IP } }),
  denied({ principal: 'webhook', label: 'probe: the webhook launches an instance', service: 'ec2', operation: 'CreateFleet',
    params: fleet('on-demand', launchTags), state: launchState(), network: lambdaNet }),
  denied({ principal: 'image-build', label: 'probe: the image-build role reads the GitHub App key', service: 'ssm', operation: 'GetParameter',
    params: { Name: APP_KEY, WithDecryption: true }, state: { parameters: secrets }, caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0' }, network: { sourceIp: '203.0.113.50' } }),
  denied({ principal: 'image-build', label: 'probe: the image-build role reads the webhook secret', service: 'ssm', operation: 'GetParameters',
    params: { Names: [WEBHOOK_SECRET], WithDecryption: true }, state: { parameters: secrets }, caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0' }, network: { sourceIp: '203.0.113.50' } }),
  denied({ principal: 'image-build', label: 'probe: the image-build role reads a JIT config', service: 'ssm', operation: 'GetParameter',
    params: { Name: `/hangar/jit/${ME}`, WithDecryption: true }, state: { parameters: jitState(ME) }, caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0' }, network: { sourceIp: '203.0.113.50' } }),
  denied({ principal: 'image-build', label: 'probe: the image-build role reads /hangar by path', service: 'ssm', operation: 'GetParametersByPath',
    params: { Path: '/hangar' }, caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0' }, network: { sourceIp: '203.0.113.50' } }),
  denied({ principal: 'image-build', label: 'probe: the image-build role decrypts a SecureString directly', service: 'kms', operation: 'Decrypt',
    params: { KeyId: 'alias/aws/ssm', ViaService: 'ssm', EncryptionContext: { PARAMETER_ARN: `arn:aws:ssm:us-east-1:${ACCOUNT}:parameter${APP_KEY}` } },
    caller: { instanceId: 'i-0b0b0b0b0b0b0b0b0' }, network: { sourceIp: '203.0.113.50' } }),
  denied({ principal: 'scaler', label: 'probe: the scaler terminates an instance Hangar did not launch', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [FOREIGN] }, state: { instances: { [FOREIGN]: { tags: { Name: 'build-server' } } } }, network: lambdaNet }),
  denied({ principal: 'scaler', label: 'probe: the scaler tags an instance Hangar did not launch', service: 'ec2', operation: 'CreateTags',
    params: { Resources: [FOREIGN], Tags: kv({ 'hangar:managed-by': 'hangar' }) }, state: { instances: { [FOREIGN]: { tags: { Name: 'build-server' } } } }, network: lambdaNet }),
  denied({ principal: 'provisioner', label: 'probe: the provisioner terminates an instance Hangar did not launch', service: 'ec2', operation: 'TerminateInstances',
    params: { InstanceIds: [FOREIGN] }, state: { instances: { [FOREIGN]: { tags: {} } } }, network: lambdaNet }),
  denied({ principal: 'scaler', label: 'probe: the scaler launches the placeholder base AMI (before the first build)', service: 'ec2', operation: 'CreateFleet',
    params: fleet('spot', launchTags), state: launchState(BASE_AMI, {}), network: lambdaNet }),
  denied({ principal: 'scaler', label: 'probe: the scaler launches an untagged instance', service: 'ec2', operation: 'CreateFleet',
    params: { ...fleet('spot', launchTags), TagSpecifications: [] }, state: launchState(), network: lambdaNet }),
  denied({ principal: 'provisioner', label: 'probe: the provisioner deletes a JIT config', service: 'ssm', operation: 'DeleteParameter',
    params: { Name: `/hangar/jit/${ME}` }, state: { parameters: jitState(ME) }, network: lambdaNet }),
];

const write = (name, records) => writeFileSync(join(here, name), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
write('components.jsonl', components);
write('probes.jsonl', probes);
console.log(`wrote ${components.length} component calls and ${probes.length} probes`);
