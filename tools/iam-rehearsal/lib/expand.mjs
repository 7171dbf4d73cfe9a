// One recorded AWS API call -> the authorizations AWS checks for it.
//
// The recorder (the local cloud's fault proxy) writes what it saw: principal, operation, the
// request parameters and the state of the resources they name. Which IAM actions on which
// resources with which condition keys AWS evaluates for that is decided here, each rule with
// the AWS documentation that says so. Sources used throughout:
//   [EC2-SAR]  https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
//   [SSM-SAR]  https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html
//   [SQS-SAR]  https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsqs.html
//   [DDB-SAR]  https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html
//   [KMS-SAR]  https://docs.aws.amazon.com/service-authorization/latest/reference/list_awskeymanagementservice.html
//   [LOGS-SAR] https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatchlogs.html
//   [CW-SAR]   https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
//   [GLOBAL]   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html

import { TemplateError } from './template.mjs';
import { kmsKey, queueByUrl, tableByName } from './policies.mjs';

export class RecordError extends Error {}

// Resources a launch creates have no id yet; AWS evaluates them as `<type>/*`. A fixed new-id
// stand-in keeps iam-simulate on one concrete resource (a policy naming `<type>/*` matches it,
// one naming a specific id does not: as in AWS).
const NEW = { fleet: 'fleet-00000000-0000-4000-8000-00000000new0', instance: 'i-0000000000000new0', volume: 'vol-0000000000000new0',
  'network-interface': 'eni-0000000000000new0', 'spot-instances-request': 'sir-0000new0' };

const tagsOf = (list) => Object.fromEntries((list ?? []).map((t) => [t.Key, t.Value ?? '']));

function resourceTagKeys(tags, prefixes) {
  const out = {};
  for (const [k, v] of Object.entries(tags ?? {})) for (const p of prefixes) out[`${p}/${k}`] = v;
  return out;
}

function requestTagKeys(tags) {
  const out = {};
  for (const [k, v] of Object.entries(tags ?? {})) out[`aws:RequestTag/${k}`] = v;
  if (Object.keys(tags ?? {}).length) out['aws:TagKeys'] = Object.keys(tags);
  return out;
}

function need(obj, key, where) {
  if (obj?.[key] === undefined || obj[key] === null) throw new RecordError(`${where}: record has no ${key}`);
  return obj[key];
}

/** ARN helpers for the stack's account and region. */
function arns(stack) {
  const a = (svc, rest, region = stack.region, account = stack.account) => `arn:${stack.partition}:${svc}:${region}:${account}:${rest}`;
  return {
    ec2: (type, id) => a('ec2', `${type}/${id}`),
    image: (id) => a('ec2', `image/${id}`, stack.region, ''),
    // [SSM-SAR] parameter: arn:${Partition}:ssm:${Region}:${Account}:parameter/${ParameterNameWithoutLeadingSlash}
    parameter: (name) => a('ssm', `parameter/${name.replace(/^\//, '')}`),
    logGroup: (name) => a('logs', `log-group:${name}`),
    logStream: (group, stream) => a('logs', `log-group:${group}:log-stream:${stream}`),
  };
}

// ---------------------------------------------------------------- KMS on the caller's behalf
// Services that encrypt with KMS for a caller call KMS with the caller's credentials (forward
// access sessions): kms:ViaService names the service, aws:ViaAWSService is true, and the key's
// policy and the caller's identity policies decide together (same account: either may allow when
// the key policy names the principal; "Allow the account" delegates to IAM).
//   https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
//   https://docs.aws.amazon.com/IAM/latest/UserGuide/access_forward_access_sessions.html
//   https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html#key-policy-default-allow-root-enable-iam
function kmsViaService(stack, key, action, service, encryptionContext, why) {
  const ctx = {
    'kms:ViaService': `${service}.${stack.region}.amazonaws.com`,
    'kms:CallerAccount': stack.account,
    'aws:ViaAWSService': 'true',
  };
  for (const [k, v] of Object.entries(encryptionContext ?? {})) ctx[`kms:EncryptionContext:${k}`] = v;
  if (encryptionContext) ctx['kms:EncryptionContextKeys'] = Object.keys(encryptionContext);
  return { action, resource: key.arn, resourcePolicy: key.policy, resourcePolicyName: key.name, context: ctx, implied: true, why, viaService: true };
}

// ---------------------------------------------------------------- SSM Parameter Store
function parameterInfo(stack, call, name) {
  const st = call.state?.parameters?.[name];
  for (const id of stack.resourcesOfType('AWS::SSM::Parameter')) {
    if (stack.exists(id) && stack.ref(id) === name) {
      const p = stack.properties(id);
      return { type: p.Type, keyId: undefined, tags: p.Tags ?? st?.tags ?? {}, ...st };
    }
  }
  return st ?? null;
}

function ssmParameterAuth(stack, call, action, name, extra = {}) {
  const info = parameterInfo(stack, call, name);
  // [SSM-SAR] parameter resource: aws:ResourceTag/${TagKey} and ssm:resourceTag/${TagKey}
  return {
    action,
    resource: arns(stack).parameter(name),
    context: { ...resourceTagKeys(info?.tags, ['aws:ResourceTag', 'ssm:resourceTag']), ...extra },
  };
}

// SecureString values are encrypted and decrypted by Parameter Store with KMS on the caller's
// behalf, with the parameter's ARN as encryption context PARAMETER_ARN; standard-tier writes use
// kms:Encrypt, advanced-tier writes kms:GenerateDataKey; reads kms:Decrypt.
//   https://docs.aws.amazon.com/kms/latest/developerguide/services-parameter-store.html
//   https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-paramstore-securestring.html
function secureStringKms(stack, call, name, action, keyIdFromRequest) {
  const info = parameterInfo(stack, call, name);
  if (!info) throw new RecordError(`ssm ${name}: record's state.parameters does not say the parameter's type`);
  if (info.type !== 'SecureString') return [];
  const key = kmsKey(stack, keyIdFromRequest ?? info.keyId, 'aws/ssm');
  return [kmsViaService(stack, key, action, 'ssm', { PARAMETER_ARN: arns(stack).parameter(name) },
    `SecureString ${name}: Parameter Store calls ${action} with the caller's credentials (services-parameter-store)`)];
}

function expandSsm(stack, call) {
  const p = call.params ?? {};
  const op = call.operation;
  const where = `ssm:${op}`;
  switch (op) {
    case 'GetParameter': {
      const name = need(p, 'Name', where);
      return [ssmParameterAuth(stack, call, 'ssm:GetParameter', name),
        ...(p.WithDecryption ? secureStringKms(stack, call, name, 'kms:Decrypt') : [])];
    }
    // GetParameters is authorised per parameter named ([SSM-SAR]: resource parameter*).
    case 'GetParameters':
      return need(p, 'Names', where).flatMap((name) => [ssmParameterAuth(stack, call, 'ssm:GetParameters', name),
        ...(p.WithDecryption ? secureStringKms(stack, call, name, 'kms:Decrypt') : [])]);
    case 'GetParametersByPath':
      return [ssmParameterAuth(stack, call, 'ssm:GetParametersByPath', need(p, 'Path', where))];
    case 'GetParameterHistory':
      return [ssmParameterAuth(stack, call, 'ssm:GetParameterHistory', need(p, 'Name', where))];
    case 'PutParameter': {
      const name = need(p, 'Name', where);
      const tags = tagsOf(p.Tags);
      // [SSM-SAR] PutParameter: aws:RequestTag/${TagKey}, aws:TagKeys, ssm:Overwrite.
      const out = [ssmParameterAuth(stack, call, 'ssm:PutParameter', name, { ...requestTagKeys(tags), 'ssm:Overwrite': String(!!p.Overwrite) })];
      // "To tag a parameter when you create it, you also need ssm:AddTagsToResource":
      //   https://docs.aws.amazon.com/systems-manager/latest/userguide/tagging-parameters.html
      //   (and the PutParameter API reference, parameter Tags)
      if (Object.keys(tags).length) {
        out.push({ ...ssmParameterAuth(stack, call, 'ssm:AddTagsToResource', name, requestTagKeys(tags)), implied: true,
          why: 'PutParameter with Tags also needs ssm:AddTagsToResource (tagging-parameters)' });
      }
      if (p.Type === 'SecureString') {
        const action = p.Tier === 'Advanced' ? 'kms:GenerateDataKey' : 'kms:Encrypt';
        const key = kmsKey(stack, p.KeyId, 'aws/ssm');
        out.push(kmsViaService(stack, key, action, 'ssm', { PARAMETER_ARN: arns(stack).parameter(name) },
          `SecureString ${name} (${p.Tier ?? 'Standard'} tier): Parameter Store calls ${action} with the caller's credentials (services-parameter-store)`));
      }
      return out;
    }
    case 'DeleteParameter':
      return [ssmParameterAuth(stack, call, 'ssm:DeleteParameter', need(p, 'Name', where))];
    case 'DeleteParameters':
      return need(p, 'Names', where).map((name) => ssmParameterAuth(stack, call, 'ssm:DeleteParameters', name));
    case 'AddTagsToResource': {
      if (p.ResourceType !== 'Parameter') throw new RecordError(`${where}: only ResourceType Parameter is modelled`);
      return [ssmParameterAuth(stack, call, 'ssm:AddTagsToResource', need(p, 'ResourceId', where), requestTagKeys(tagsOf(p.Tags)))];
    }
    // [SSM-SAR] DescribeParameters has no resource types: Resource "*".
    case 'DescribeParameters':
      return [{ action: 'ssm:DescribeParameters', resource: '*', context: {} }];
    default:
      throw new RecordError(`${where}: operation not modelled by the rehearsal`);
  }
}

// ---------------------------------------------------------------- SQS
// SSE-KMS queues: "producers need kms:GenerateDataKey and kms:Decrypt; consumers kms:Decrypt"
//   https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html
// Batch actions are authorised as the single action: "permissions for SendMessageBatch,
// DeleteMessageBatch and ChangeMessageVisibilityBatch are the same as for SendMessage,
// DeleteMessage and ChangeMessageVisibility"
//   https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-batch-api.html
const SQS_ACTION = {
  SendMessage: 'sqs:SendMessage',
  SendMessageBatch: 'sqs:SendMessage',
  ReceiveMessage: 'sqs:ReceiveMessage',
  DeleteMessage: 'sqs:DeleteMessage',
  DeleteMessageBatch: 'sqs:DeleteMessage',
  ChangeMessageVisibility: 'sqs:ChangeMessageVisibility',
  ChangeMessageVisibilityBatch: 'sqs:ChangeMessageVisibility',
  GetQueueAttributes: 'sqs:GetQueueAttributes',
};

function expandSqs(stack, call) {
  const action = SQS_ACTION[call.operation];
  if (!action) throw new RecordError(`sqs:${call.operation}: operation not modelled by the rehearsal`);
  const q = queueByUrl(stack, need(call.params, 'QueueUrl', `sqs:${call.operation}`));
  const out = [{ action, resource: q.arn, resourcePolicy: q.resourcePolicy, resourcePolicyName: q.resourcePolicyName, context: {} }];
  if (q.key) {
    const ctx = { 'aws:sqs:arn': q.arn };
    if (action === 'sqs:SendMessage') {
      out.push(kmsViaService(stack, q.key, 'kms:GenerateDataKey', 'sqs', ctx, `SSE-KMS queue ${q.id}: a producer needs kms:GenerateDataKey (sqs-key-management)`));
      out.push(kmsViaService(stack, q.key, 'kms:Decrypt', 'sqs', ctx, `SSE-KMS queue ${q.id}: a producer needs kms:Decrypt (sqs-key-management)`));
    } else if (action === 'sqs:ReceiveMessage') {
      out.push(kmsViaService(stack, q.key, 'kms:Decrypt', 'sqs', ctx, `SSE-KMS queue ${q.id}: a consumer needs kms:Decrypt (sqs-key-management)`));
    }
  }
  return out;
}

// ---------------------------------------------------------------- DynamoDB
// A table encrypted with a customer managed key: DynamoDB calls kms:Decrypt with the caller's
// credentials to decrypt the table key when a request needs it ("DynamoDB calls Decrypt ... on
// behalf of the user"), encryption context aws:dynamodb:tableName / aws:dynamodb:subscriberId.
//   https://docs.aws.amazon.com/kms/latest/developerguide/services-dynamodb.html
function ddbKms(stack, t) {
  if (!t.key) return [];
  return [kmsViaService(stack, t.key, 'kms:Decrypt', 'dynamodb',
    { 'aws:dynamodb:tableName': t.arn.split('/').pop(), 'aws:dynamodb:subscriberId': stack.account },
    `table ${t.id} uses a customer managed key: DynamoDB decrypts the table key with the caller's credentials (services-dynamodb)`)];
}

function expandDynamo(stack, call) {
  const p = call.params ?? {};
  const op = call.operation;
  const where = `dynamodb:${op}`;
  switch (op) {
    case 'PutItem': case 'UpdateItem': case 'GetItem': case 'DeleteItem': case 'Scan': {
      const t = tableByName(stack, need(p, 'TableName', where));
      return [{ action: `dynamodb:${op}`, resource: t.arn, context: {} }, ...ddbKms(stack, t)];
    }
    case 'BatchGetItem': case 'BatchWriteItem':
      return need(p, 'TableNames', where).flatMap((n) => {
        const t = tableByName(stack, n);
        return [{ action: `dynamodb:${op}`, resource: t.arn, context: {} }, ...ddbKms(stack, t)];
      });
    // "Query on an index: the resource is the index, arn:...:table/${TableName}/index/${IndexName}" [DDB-SAR]
    case 'Query': {
      const t = tableByName(stack, need(p, 'TableName', where));
      if (p.IndexName !== undefined && !t.indexes.includes(p.IndexName)) {
        throw new RecordError(`${where}: table ${t.id} has no index ${p.IndexName}`);
      }
      const resource = p.IndexName ? `${t.arn}/index/${p.IndexName}` : t.arn;
      return [{ action: 'dynamodb:Query', resource, context: {} }, ...ddbKms(stack, t)];
    }
    default:
      throw new RecordError(`${where}: operation not modelled by the rehearsal`);
  }
}

// ---------------------------------------------------------------- EC2
function instanceAuth(stack, call, action, id, extra = {}) {
  const tags = call.state?.instances?.[id]?.tags;
  if (tags === undefined) throw new RecordError(`ec2:${call.operation}: record's state.instances has no ${id}`);
  // [EC2-SAR] instance: aws:ResourceTag/${TagKey}, ec2:ResourceTag/${TagKey}, ec2:InstanceID, ...
  return {
    action,
    resource: arns(stack).ec2('instance', id),
    context: { ...resourceTagKeys(tags, ['aws:ResourceTag', 'ec2:ResourceTag']), 'ec2:InstanceID': id, 'ec2:Region': stack.region, ...extra },
  };
}

/** The stack's launch template by id or name, resolved. */
// The local cloud's launch template has its own id: the record may name it by id with
// state.launchTemplates[id].name, which maps it to the template's LaunchTemplateName.
function launchTemplateData(stack, spec, call) {
  const name = spec.LaunchTemplateName ?? call.state?.launchTemplates?.[spec.LaunchTemplateId]?.name;
  for (const id of stack.resourcesOfType('AWS::EC2::LaunchTemplate')) {
    const p = stack.properties(id);
    if (spec.LaunchTemplateId === stack.ref(id) || (name !== undefined && name === p.LaunchTemplateName)) {
      return { logicalId: id, ltId: stack.ref(id), props: p };
    }
  }
  throw new RecordError(`launch template ${JSON.stringify(spec)} is not the template's`);
}

function profileRole(stack, profileArn) {
  for (const id of stack.resourcesOfType('AWS::IAM::InstanceProfile')) {
    if (stack.getAtt(id, 'Arn') === profileArn || stack.ref(id) === profileArn) {
      const roles = stack.properties(id).Roles;
      return roles.map((r) => `arn:${stack.partition}:iam::${stack.account}:role/${r}`);
    }
  }
  throw new RecordError(`instance profile ${profileArn} is not the template's`);
}

// CreateFleet (type instant) and RunInstances with a launch template.
function expandLaunch(stack, call) {
  const p = call.params ?? {};
  const op = call.operation;
  const A = arns(stack);
  const configs = op === 'CreateFleet'
    ? need(p, 'LaunchTemplateConfigs', `ec2:${op}`)
    : [{ LaunchTemplateSpecification: need(p, 'LaunchTemplate', `ec2:${op}`), Overrides: [{ SubnetId: p.SubnetId, InstanceType: p.InstanceType }] }];
  // Request tags per resource type (TagSpecifications of the request).
  const requestTags = {};
  for (const ts of p.TagSpecifications ?? []) requestTags[ts.ResourceType] = { ...requestTags[ts.ResourceType], ...tagsOf(ts.Tags) };
  const out = [];
  const fleetCreateAction = op; // the value of ec2:CreateAction for tag-on-create

  const add = (a) => out.push(a);
  const tagOnCreate = (type, resource, tags, source) => {
    // Tagging on create is authorised as ec2:CreateTags with ec2:CreateAction = the creating
    // action, on the created resource, with its request tags:
    //   https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
    //   ("you must also have permission to use the ec2:CreateTags action ... ec2:CreateAction")
    add({ action: 'ec2:CreateTags', resource, implied: true,
      context: { ...requestTagKeys(tags), 'ec2:CreateAction': fleetCreateAction, 'ec2:Region': stack.region },
      why: `tags on the new ${type} (${source}): ec2:CreateTags with ec2:CreateAction=${fleetCreateAction} (supported-iam-actions-tagging)` });
  };

  if (op === 'CreateFleet') {
    // The fleet itself [EC2-SAR: CreateFleet, resource fleet*]; its tags if any.
    add({ action: 'ec2:CreateFleet', resource: A.ec2('fleet', NEW.fleet), context: { ...requestTagKeys(requestTags.fleet), 'ec2:Region': stack.region } });
    if (requestTags.fleet) tagOnCreate('fleet', A.ec2('fleet', NEW.fleet), requestTags.fleet, 'request');
  }

  for (const cfg of configs) {
    const spec = cfg.LaunchTemplateSpecification;
    const lt = launchTemplateData(stack, spec, call);
    const d = lt.props.LaunchTemplateData ?? {};
    const ltArn = A.ec2('launch-template', lt.ltId);
    const ltTags = {};
    for (const ts of d.TagSpecifications ?? []) ltTags[ts.ResourceType] = tagsOf(ts.Tags);
    // Tags the instance will carry: the request's TagSpecifications merge with the template's.
    const tagsFor = (type) => ({ ...(ltTags[type] ?? {}), ...(requestTags[type] ?? {}) });

    // AMI: `resolve:ssm:NAME` is resolved by EC2 at launch "with the caller's permissions":
    // "Anyone who uses the launch template also needs the ssm:GetParameters permission in order
    // for the parameter value to be validated"
    //   https://docs.aws.amazon.com/autoscaling/ec2/userguide/using-systems-manager-parameters.html
    //   https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-launch-template.html#use-an-ssm-parameter-instead-of-an-ami-id
    let imageId = d.ImageId;
    if (typeof imageId === 'string' && imageId.startsWith('resolve:ssm:')) {
      const name = imageId.slice('resolve:ssm:'.length).replace(/:\d+$/, '');
      add({ ...ssmParameterAuth(stack, call, 'ssm:GetParameters', name), implied: true,
        why: `launch template ImageId ${imageId}: EC2 resolves it with the caller's ssm:GetParameters (using-systems-manager-parameters)` });
      imageId = call.state?.parameters?.[name]?.value;
      if (!imageId) throw new RecordError(`ec2:${op}: record's state.parameters["${name}"].value (the AMI id at launch) is missing`);
    }
    const image = call.state?.images?.[imageId];
    if (!image) throw new RecordError(`ec2:${op}: record's state.images has no ${imageId}`);

    // One set per override (instance type / subnet): RunInstances is authorised per resource the
    // launch uses or creates. "You must grant anyone that will use a launch template the
    // permissions required to create and access the resources that are specified in the launch
    // template" https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/permissions-for-launch-templates.html
    // EC2 Fleet: "the user needs ec2:CreateFleet ... ec2:RunInstances ... ec2:CreateTags ... iam:PassRole"
    //   https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-fleet-prerequisites.html
    const overrides = cfg.Overrides?.length ? cfg.Overrides : [{}];
    const subnets = [...new Set(overrides.map((o) => o.SubnetId).filter(Boolean))];
    if (!subnets.length) throw new RecordError(`ec2:${op}: no SubnetId in the overrides (the launch template names none)`);
    const types = [...new Set(overrides.map((o) => o.InstanceType ?? d.InstanceType).filter(Boolean))];
    const ltKey = { 'ec2:LaunchTemplate': ltArn, 'ec2:IsLaunchTemplateResource': 'true', 'ec2:Region': stack.region };

    const launchActions = op === 'CreateFleet' ? ['ec2:CreateFleet', 'ec2:RunInstances'] : ['ec2:RunInstances'];
    for (const action of launchActions) {
      const implied = action !== `ec2:${op}`;
      const why = implied ? `CreateFleet launches with RunInstances on each resource (ec2-fleet-prerequisites, permissions-for-launch-templates)` : undefined;
      // Resource types per action [EC2-SAR]: CreateFleet: fleet*, instance*, image, launch-template,
      // subnet, volume; RunInstances: image*, instance*, network-interface*, security-group*, subnet*,
      // launch-template, volume, key-pair, spot-instances-request, ...
      const inFleet = action === 'ec2:CreateFleet';
      for (const type of types.length ? types : [undefined]) {
        add({ action, resource: A.ec2('instance', NEW.instance), implied, why,
          context: { ...requestTagKeys(tagsFor('instance')), ...ltKey, ...(type ? { 'ec2:InstanceType': type } : {}),
            ...(d.IamInstanceProfile?.Arn ? { 'ec2:InstanceProfile': d.IamInstanceProfile.Arn } : {}),
            ...(d.MetadataOptions?.HttpTokens ? { 'ec2:MetadataHttpTokens': d.MetadataOptions.HttpTokens } : {}) } });
      }
      add({ action, resource: A.image(imageId), implied, why,
        context: { ...resourceTagKeys(image.tags, ['aws:ResourceTag', 'ec2:ResourceTag']), 'ec2:Owner': image.owner,
          'ec2:ImageID': imageId, 'ec2:Public': String(!!image.public), ...ltKey } });
      add({ action, resource: ltArn, implied, why,
        context: { ...resourceTagKeys(tagsOf(lt.props.TagSpecifications?.find((t) => t.ResourceType === 'launch-template')?.Tags), ['aws:ResourceTag', 'ec2:ResourceTag']), 'ec2:LaunchTemplate': ltArn, 'ec2:Region': stack.region } });
      for (const s of subnets) {
        const st = call.state?.subnets?.[s];
        if (!st) throw new RecordError(`ec2:${op}: record's state.subnets has no ${s}`);
        add({ action, resource: A.ec2('subnet', s), implied, why,
          context: { 'ec2:Vpc': A.ec2('vpc', st.vpc), 'ec2:SubnetID': s, ...(st.availabilityZone ? { 'ec2:AvailabilityZone': st.availabilityZone } : {}), ...ltKey } });
      }
      add({ action, resource: A.ec2('volume', NEW.volume), implied, why,
        context: { ...requestTagKeys(tagsFor('volume')), ...ltKey,
          ...(d.BlockDeviceMappings?.[0]?.Ebs ? { 'ec2:Encrypted': String(!!d.BlockDeviceMappings[0].Ebs.Encrypted), 'ec2:VolumeType': d.BlockDeviceMappings[0].Ebs.VolumeType } : {}) } });
      if (!inFleet) {
        add({ action, resource: A.ec2('network-interface', NEW['network-interface']), implied, why,
          context: { ...requestTagKeys(tagsFor('network-interface')), ...ltKey, 'ec2:Subnet': A.ec2('subnet', subnets[0]) } });
        const groups = (d.NetworkInterfaces ?? []).flatMap((n) => n.Groups ?? []).concat(d.SecurityGroupIds ?? []);
        for (const g of groups) {
          add({ action, resource: A.ec2('security-group', g), implied, why, context: { 'ec2:Vpc': A.ec2('vpc', call.state?.securityGroups?.[g]?.vpc ?? call.state?.subnets?.[subnets[0]]?.vpc), ...ltKey } });
        }
        if (d.KeyName) add({ action, resource: A.ec2('key-pair', d.KeyName), implied, why, context: { ...ltKey } });
        if ((p.TargetCapacitySpecification?.DefaultTargetCapacityType ?? '').toLowerCase() === 'spot' || d.InstanceMarketOptions?.MarketType === 'spot') {
          add({ action, resource: A.ec2('spot-instances-request', NEW['spot-instances-request']), implied, why, context: { ...requestTagKeys(tagsFor('spot-instances-request')), ...ltKey } });
        }
      }
    }

    // Tag on create, for every resource type that gets tags from the request or the template.
    for (const type of new Set([...Object.keys(requestTags), ...Object.keys(ltTags)])) {
      if (type === 'fleet' || type === 'launch-template') continue;
      if (!NEW[type]) throw new RecordError(`ec2:${op}: tags for new ${type} are not modelled`);
      const resource = A.ec2(type, NEW[type]);
      tagOnCreate(type, resource, tagsFor(type), requestTags[type] ? 'request TagSpecifications' : 'launch template TagSpecifications');
    }

    // The instance profile's role is passed to EC2: "To launch an instance with a role, the
    // user needs iam:PassRole for the role" (and the launch template's profile counts).
    //   https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html#permission-to-pass-iam-roles
    //   https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html (iam:PassedToService)
    if (d.IamInstanceProfile?.Arn || d.IamInstanceProfile?.Name) {
      for (const role of profileRole(stack, d.IamInstanceProfile.Arn ?? d.IamInstanceProfile.Name)) {
        add({ action: 'iam:PassRole', resource: role, implied: true,
          context: { 'iam:PassedToService': 'ec2.amazonaws.com' },
          why: `launch template's instance profile: iam:PassRole of ${role.split('/').pop()} to EC2 (iam-roles-for-amazon-ec2)` });
      }
    }
  }
  return out;
}

function expandEc2(stack, call) {
  const p = call.params ?? {};
  const op = call.operation;
  if (op === 'CreateFleet' || op === 'RunInstances') return expandLaunch(stack, call);
  if (op.startsWith('Describe')) return [{ action: `ec2:${op}`, resource: '*', context: { 'ec2:Region': stack.region } }];
  switch (op) {
    case 'TerminateInstances': case 'StopInstances': case 'StartInstances': case 'RebootInstances':
      return need(p, 'InstanceIds', `ec2:${op}`).map((id) => instanceAuth(stack, call, `ec2:${op}`, id));
    // [EC2-SAR] CreateTags/DeleteTags on instance: aws:RequestTag/${TagKey}, aws:TagKeys, resource tags.
    case 'CreateTags': case 'DeleteTags': {
      const tags = tagsOf(need(p, 'Tags', `ec2:${op}`));
      const reqKeys = op === 'CreateTags' ? requestTagKeys(tags) : { 'aws:TagKeys': Object.keys(tags) };
      return need(p, 'Resources', `ec2:${op}`).map((id) => {
        if (!id.startsWith('i-')) throw new RecordError(`ec2:${op}: only instance ids are modelled (got ${id})`);
        return instanceAuth(stack, call, `ec2:${op}`, id, reqKeys);
      });
    }
    default:
      throw new RecordError(`ec2:${op}: operation not modelled by the rehearsal`);
  }
}

// ---------------------------------------------------------------- Logs, CloudWatch, KMS direct
function expandLogs(stack, call) {
  const p = call.params ?? {};
  const A = arns(stack);
  const group = need(p, 'logGroupName', `logs:${call.operation}`);
  switch (call.operation) {
    // [LOGS-SAR] CreateLogStream and PutLogEvents: resource log-stream
    // (arn:...:log-group:${LogGroupName}:log-stream:${LogStreamName}).
    case 'CreateLogStream': case 'PutLogEvents':
      return [{ action: `logs:${call.operation}`, resource: A.logStream(group, need(p, 'logStreamName', `logs:${call.operation}`)), context: {} }];
    // [LOGS-SAR] DescribeLogStreams: resource log-group (arn:...:log-group:${LogGroupName}).
    case 'DescribeLogStreams':
      return [{ action: 'logs:DescribeLogStreams', resource: A.logGroup(group), context: {} }];
    default:
      throw new RecordError(`logs:${call.operation}: operation not modelled by the rehearsal`);
  }
}

function expandCloudWatch(stack, call) {
  if (call.operation !== 'PutMetricData') throw new RecordError(`cloudwatch:${call.operation}: operation not modelled`);
  // [CW-SAR] PutMetricData: condition key cloudwatch:namespace.
  return [{ action: 'cloudwatch:PutMetricData', resource: '*', context: { 'cloudwatch:namespace': need(call.params, 'Namespace', 'cloudwatch:PutMetricData') } }];
}

function expandKms(stack, call) {
  // A direct KMS call (e.g. Lambda decrypting the function's environment with the execution
  // role: https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars-encryption.html).
  const p = call.params ?? {};
  const keyId = need(p, 'KeyId', `kms:${call.operation}`);
  const key = kmsKey(stack, keyId, keyId.startsWith('alias/aws/') ? keyId.slice('alias/'.length) : undefined);
  const ctx = { 'kms:CallerAccount': stack.account };
  for (const [k, v] of Object.entries(p.EncryptionContext ?? {})) ctx[`kms:EncryptionContext:${k}`] = v;
  if (p.EncryptionContext) ctx['kms:EncryptionContextKeys'] = Object.keys(p.EncryptionContext);
  if (p.ViaService) { ctx['kms:ViaService'] = `${p.ViaService}.${stack.region}.amazonaws.com`; ctx['aws:ViaAWSService'] = 'true'; }
  return [{ action: `kms:${call.operation}`, resource: key.arn, resourcePolicy: key.policy, resourcePolicyName: key.name, context: ctx, viaService: !!p.ViaService }];
}

const BY_SERVICE = { ssm: expandSsm, sqs: expandSqs, dynamodb: expandDynamo, ec2: expandEc2, logs: expandLogs, cloudwatch: expandCloudWatch, kms: expandKms };

/** Authorizations for one record; each {action, resource, context, resourcePolicy?, implied?, why?}. */
export function expandCall(stack, call) {
  const f = BY_SERVICE[call.service];
  if (!f) throw new RecordError(`service ${call.service} is not modelled by the rehearsal`);
  try {
    return f(stack, call);
  } catch (e) {
    if (e instanceof TemplateError) throw new RecordError(e.message);
    throw e;
  }
}
