// Reads infra/template.yaml and resolves the intrinsic functions the IAM-relevant parts use,
// for one set of stack parameters, in a fixed rehearsal account and region.
//
// Resolution follows CloudFormation's documented semantics:
//   Ref / GetAtt return values per resource type: the "Return values" section of each resource's page,
//     https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-iam-role.html etc.
//   Fn::Sub (incl. the list form, and `${!Literal}` escapes):
//     https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference-sub.html
//   Conditions / Fn::If / AWS::NoValue:
//     https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference-conditions.html
//   Pseudo parameters:
//     https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/pseudo-parameter-reference.html
// Anything not modelled (an unknown intrinsic, a GetAtt attribute or Ref of a resource type not
// listed below) is an error: a policy is never evaluated with a part silently dropped.

import { readFileSync } from 'node:fs';
import { parseDocument, Scalar, YAMLMap, YAMLSeq } from 'yaml';

export const ACCOUNT = '123456789012';
export const REGION = 'us-east-1';
export const PARTITION = 'aws';
export const DEFAULT_STACK = 'hangar';

// Values for parameters that have no Default in the template (the rehearsal's stand-ins).
export const REHEARSAL_PARAMETERS = {
  GitHubOrganization: 'hangar-rehearsal',
  VpcId: 'vpc-0a11ce0000000000a',
  RunnerSubnetIds: 'subnet-0a11ce0000000001a,subnet-0a11ce0000000002b',
};

const NO_VALUE = Symbol('AWS::NoValue');

export class TemplateError extends Error {}

// ---------------------------------------------------------------- YAML with CloudFormation tags
const SHORT = ['Ref', 'Sub', 'GetAtt', 'Join', 'If', 'Equals', 'Not', 'And', 'Or', 'FindInMap', 'Select',
  'Split', 'Base64', 'GetAZs', 'ImportValue', 'Condition', 'Cidr', 'Transform', 'Length', 'ToJsonString'];

function cfnTag(name) {
  const key = name === 'Ref' || name === 'Condition' ? name : `Fn::${name}`;
  const make = (value) => ({ [key]: value });
  return [
    { tag: `!${name}`, collection: 'seq', resolve: (seq) => make(seq.toJSON()) },
    { tag: `!${name}`, collection: 'map', resolve: (map) => make(map.toJSON()) },
    {
      tag: `!${name}`,
      resolve: (str) => (name === 'GetAtt' ? make(splitGetAtt(str)) : make(str)),
    },
  ];
}

function splitGetAtt(s) {
  const i = s.indexOf('.');
  if (i < 0) throw new TemplateError(`!GetAtt ${s}: expected Resource.Attribute`);
  return [s.slice(0, i), s.slice(i + 1)];
}

export function loadTemplateText(text) {
  const doc = parseDocument(text, { customTags: SHORT.flatMap(cfnTag), uniqueKeys: true });
  if (doc.errors.length) throw new TemplateError(`template YAML: ${doc.errors.map((e) => e.message).join('; ')}`);
  return doc.toJS({ maxAliasCount: -1 });
}

export function loadTemplateFile(path) {
  return loadTemplateText(readFileSync(path, 'utf8'));
}

// ---------------------------------------------------------------- the stack
export class Stack {
  /**
   * @param {object} template parsed template (see loadTemplateText)
   * @param {object} opts { stackName, params: {K: V} overriding defaults }
   */
  constructor(template, opts = {}) {
    this.t = template;
    this.stackName = opts.stackName ?? DEFAULT_STACK;
    this.account = ACCOUNT;
    this.region = REGION;
    this.partition = PARTITION;
    this.params = this.#resolveParameters(opts.params ?? {});
    this.conditionCache = new Map();
  }

  #resolveParameters(overrides) {
    const out = {};
    const declared = this.t.Parameters ?? {};
    for (const k of Object.keys(overrides)) {
      if (!(k in declared)) throw new TemplateError(`--param ${k}: the template declares no such parameter`);
    }
    for (const [name, decl] of Object.entries(declared)) {
      let v = overrides[name] ?? (decl.Default !== undefined ? String(decl.Default) : REHEARSAL_PARAMETERS[name]);
      if (v === undefined) throw new TemplateError(`parameter ${name} has no default: pass --param ${name}=...`);
      if (decl.AllowedValues && !decl.AllowedValues.map(String).includes(String(v))) {
        throw new TemplateError(`parameter ${name}=${v} is not one of ${decl.AllowedValues.join(', ')}`);
      }
      if (decl.AllowedPattern && !new RegExp(decl.AllowedPattern).test(String(v))) {
        throw new TemplateError(`parameter ${name}=${v} does not match ${decl.AllowedPattern}`);
      }
      const type = decl.Type ?? 'String';
      out[name] = type.startsWith('List<') || type === 'CommaDelimitedList' ? String(v).split(',').filter(Boolean) : String(v);
    }
    return out;
  }

  resource(logicalId) {
    const r = this.t.Resources?.[logicalId];
    if (!r) throw new TemplateError(`no resource ${logicalId} in the template`);
    return r;
  }

  resourcesOfType(type) {
    return Object.entries(this.t.Resources ?? {})
      .filter(([, r]) => r.Type === type)
      .map(([id]) => id);
  }

  /** Whether a resource exists in this stack (its Condition, if any, holds). */
  exists(logicalId) {
    const r = this.resource(logicalId);
    return r.Condition === undefined || this.condition(r.Condition);
  }

  condition(name) {
    if (this.conditionCache.has(name)) return this.conditionCache.get(name);
    const c = this.t.Conditions?.[name];
    if (c === undefined) throw new TemplateError(`unknown condition ${name}`);
    const v = this.#truth(this.resolve(c, `Conditions.${name}`), `Conditions.${name}`);
    this.conditionCache.set(name, v);
    return v;
  }

  #truth(v, where) {
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    throw new TemplateError(`${where}: condition did not resolve to a boolean (${JSON.stringify(v)})`);
  }

  // Deterministic stand-in physical ids for resources CloudFormation names itself.
  #generatedName(logicalId) {
    return `${this.stackName}-${logicalId}-REHEARSAL`;
  }

  #hexId(logicalId, len) {
    let h = 0;
    for (const c of logicalId) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return h.toString(16).padStart(8, '0').repeat(3).slice(0, len);
  }

  /** Ref of a resource: its documented Ref return value. */
  ref(logicalId) {
    if (logicalId.startsWith('AWS::')) return this.pseudo(logicalId);
    if (logicalId in this.params) return this.params[logicalId];
    const r = this.resource(logicalId);
    if (!this.exists(logicalId)) throw new TemplateError(`Ref ${logicalId}: resource is not created (condition ${r.Condition} is false)`);
    const p = (k) => (r.Properties?.[k] === undefined ? undefined : this.resolve(r.Properties[k], `${logicalId}.${k}`));
    switch (r.Type) {
      case 'AWS::IAM::Role':
      case 'AWS::IAM::InstanceProfile':
        return p('RoleName') ?? p('InstanceProfileName') ?? this.#generatedName(logicalId);
      case 'AWS::SQS::Queue':
        return `https://sqs.${this.region}.amazonaws.com/${this.account}/${this.queueName(logicalId)}`;
      case 'AWS::KMS::Key':
        return `${this.#hexId(logicalId, 8)}-0000-4000-8000-${this.#hexId(logicalId + 'k', 12)}`;
      case 'AWS::DynamoDB::Table':
        return p('TableName') ?? this.#generatedName(logicalId);
      case 'AWS::SSM::Parameter':
        return p('Name') ?? this.#generatedName(logicalId);
      case 'AWS::Logs::LogGroup':
        return p('LogGroupName') ?? this.#generatedName(logicalId);
      case 'AWS::EC2::LaunchTemplate':
        return `lt-0${this.#hexId(logicalId, 16)}`;
      case 'AWS::EC2::SecurityGroup':
        return `sg-0${this.#hexId(logicalId, 16)}`;
      case 'AWS::Serverless::Function':
      case 'AWS::Lambda::Function':
        return p('FunctionName') ?? this.#generatedName(logicalId);
      default:
        throw new TemplateError(`Ref ${logicalId}: resource type ${r.Type} is not modelled by the rehearsal`);
    }
  }

  queueName(logicalId) {
    const r = this.resource(logicalId);
    const n = r.Properties?.QueueName;
    if (n !== undefined) return this.resolve(n, `${logicalId}.QueueName`);
    return this.#generatedName(logicalId) + (r.Properties?.FifoQueue ? '.fifo' : '');
  }

  getAtt(logicalId, attr) {
    const r = this.resource(logicalId);
    const arn = (service, rest, region = this.region, account = this.account) =>
      `arn:${this.partition}:${service}:${region}:${account}:${rest}`;
    switch (`${r.Type}.${attr}`) {
      case 'AWS::IAM::Role.Arn':
        return `arn:${this.partition}:iam::${this.account}:role/${this.ref(logicalId)}`;
      case 'AWS::IAM::InstanceProfile.Arn':
        return `arn:${this.partition}:iam::${this.account}:instance-profile/${this.ref(logicalId)}`;
      case 'AWS::SQS::Queue.Arn':
        return arn('sqs', this.queueName(logicalId));
      case 'AWS::SQS::Queue.QueueName':
        return this.queueName(logicalId);
      case 'AWS::KMS::Key.Arn':
        return arn('kms', `key/${this.ref(logicalId)}`);
      case 'AWS::DynamoDB::Table.Arn':
        return arn('dynamodb', `table/${this.ref(logicalId)}`);
      // "Arn: ... for example arn:aws:logs:us-west-1:123456789012:log-group:/mystack-testgroup-12ABC1AHvC:*"
      // https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-logs-loggroup.html
      case 'AWS::Logs::LogGroup.Arn':
        return arn('logs', `log-group:${this.ref(logicalId)}:*`);
      case 'AWS::EC2::SecurityGroup.GroupId':
        return this.ref(logicalId);
      default:
        throw new TemplateError(`!GetAtt ${logicalId}.${attr}: ${r.Type}.${attr} is not modelled by the rehearsal`);
    }
  }

  pseudo(name) {
    switch (name) {
      case 'AWS::AccountId': return this.account;
      case 'AWS::Region': return this.region;
      case 'AWS::Partition': return this.partition;
      case 'AWS::StackName': return this.stackName;
      case 'AWS::URLSuffix': return 'amazonaws.com';
      case 'AWS::StackId': return `arn:${this.partition}:cloudformation:${this.region}:${this.account}:stack/${this.stackName}/00000000-0000-4000-8000-000000000000`;
      case 'AWS::NoValue': return NO_VALUE;
      default: throw new TemplateError(`unknown pseudo parameter ${name}`);
    }
  }

  #sub(str, vars, where) {
    if (typeof str !== 'string') throw new TemplateError(`${where}: Fn::Sub needs a string`);
    return str.replace(/\$\{([^}]*)\}/g, (whole, name) => {
      if (name.startsWith('!')) return '${' + name.slice(1) + '}';
      if (vars && name in vars) return String(vars[name]);
      if (name.startsWith('AWS::')) return this.pseudo(name);
      if (name in this.params) {
        const v = this.params[name];
        if (Array.isArray(v)) throw new TemplateError(`${where}: Fn::Sub of list parameter ${name}`);
        return v;
      }
      const dot = name.indexOf('.');
      if (dot > 0) return this.getAtt(name.slice(0, dot), name.slice(dot + 1));
      if (this.t.Resources?.[name]) return this.ref(name);
      throw new TemplateError(`${where}: Fn::Sub references \${${name}}, which is no parameter, resource or pseudo parameter`);
    });
  }

  /** Resolves every intrinsic in `v`; `where` names the place for errors. */
  resolve(v, where = '') {
    if (Array.isArray(v)) {
      return v.map((x, i) => this.resolve(x, `${where}[${i}]`)).filter((x) => x !== NO_VALUE);
    }
    if (v === null || typeof v !== 'object') return v;
    const keys = Object.keys(v);
    if (keys.length === 1 && (keys[0] === 'Ref' || keys[0].startsWith('Fn::') || keys[0] === 'Condition')) {
      const [k] = keys;
      const a = v[k];
      const at = `${where} ${k}`;
      switch (k) {
        case 'Ref': return this.ref(this.resolve(a, at));
        case 'Condition':
          // {Condition: Name} inside Fn::And/Or/Not; as a resource attribute it never reaches here
          return this.condition(a);
        case 'Fn::Sub':
          if (typeof a === 'string') return this.#sub(a, null, at);
          if (Array.isArray(a) && a.length === 2) {
            const vars = Object.fromEntries(Object.entries(a[1]).map(([n, x]) => [n, this.resolve(x, `${at}.${n}`)]));
            for (const [n, x] of Object.entries(vars)) {
              if (typeof x !== 'string' && typeof x !== 'number') throw new TemplateError(`${at}: Sub variable ${n} is not a string`);
            }
            return this.#sub(a[0], vars, at);
          }
          throw new TemplateError(`${at}: malformed Fn::Sub`);
        case 'Fn::GetAtt': {
          const [id, attr] = Array.isArray(a) ? a : splitGetAtt(a);
          return this.getAtt(id, this.resolve(attr, at));
        }
        case 'Fn::Join': {
          const [sep, list] = a;
          const items = this.resolve(list, at);
          if (!Array.isArray(items)) throw new TemplateError(`${at}: Fn::Join of a non-list`);
          return items.join(sep);
        }
        case 'Fn::Select': {
          const [i, list] = a;
          const items = this.resolve(list, at);
          return items[Number(this.resolve(i, at))];
        }
        case 'Fn::Split': {
          const [sep, s] = a;
          return String(this.resolve(s, at)).split(sep);
        }
        case 'Fn::If': {
          const [c, yes, no] = a;
          return this.condition(c) ? this.resolve(yes, `${at}[true]`) : this.resolve(no, `${at}[false]`);
        }
        case 'Fn::Equals': {
          const [x, y] = a.map((e, i) => this.resolve(e, `${at}[${i}]`));
          return String(x) === String(y);
        }
        case 'Fn::Not': return !this.#truth(this.resolve(a[0], at), at);
        case 'Fn::And': return a.every((e, i) => this.#truth(this.resolve(e, `${at}[${i}]`), at));
        case 'Fn::Or': return a.some((e, i) => this.#truth(this.resolve(e, `${at}[${i}]`), at));
        case 'Fn::FindInMap': {
          const [m, k1, k2] = a.map((e) => this.resolve(e, at));
          const val = this.t.Mappings?.[m]?.[String(k1)]?.[String(k2)];
          if (val === undefined) throw new TemplateError(`${at}: no mapping ${m}.${k1}.${k2}`);
          return val;
        }
        case 'Fn::Base64': return Buffer.from(String(this.resolve(a, at))).toString('base64');
        default:
          throw new TemplateError(`${at}: intrinsic function ${k} is not supported by the rehearsal`);
      }
    }
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      const r = this.resolve(x, where ? `${where}.${k}` : k);
      if (r !== NO_VALUE) out[k] = r;
    }
    return out;
  }

  /** Properties of a resource, resolved. */
  properties(logicalId) {
    if (!this.exists(logicalId)) throw new TemplateError(`${logicalId} is not created for these parameters`);
    return this.resolve(this.resource(logicalId).Properties ?? {}, logicalId);
  }
}
