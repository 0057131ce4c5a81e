/**
 * The built-in policy engine (SetPolicy; Kata's agent-policy feature evaluates a Rego policy
 * with OPA/regorus, which this agent does not embed). A policy is a JSON document, described in
 * docs/POLICY.md:
 *
 *   {
 *     "default": "allow" | "deny",               // rpcs not listed in "rpcs" (default "allow")
 *     "rpcs": { "<Method>": "allow" | "deny" },  // per rpc, by wire method name
 *     "CreateContainer": <ProcessRules>,          // field rules, checked when the rpc is allowed
 *     "ExecProcess": <ProcessRules>
 *   }
 *   ProcessRules = {
 *     "commands": ["<regex>", ...],   // process.args joined by " " must fully match one (absent: any)
 *     "allowPrivileged": true|false,  // false: no CAP_SYS_ADMIN in any capability set (default true)
 *     "allowHostMounts": true|false   // CreateContainer only; false: bind mounts only from
 *                                      // below /run/kata-containers/ (default true)
 *   }
 *
 * The engine is enforced once for every AgentService rpc by the interceptor registerServices
 * installs (control/rpc/index.ts), before the rpc runs: a denied call gets PERMISSION_DENIED
 * "<Method>Request is blocked by policy: <rule>" (upstream: "<Method>Request is blocked by
 * policy"). Health rpcs are never checked (as upstream). With no policy set everything is
 * allowed. SetPolicy is itself an rpc the policy may deny.
 */
import type { grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError } from '../../shared/protocol';
import { METHOD_NAMES, METHODS, AGENT_SERVICE } from '../ctl/methods';

/** Largest policy document accepted, in bytes. */
export const MAX_POLICY_BYTES = 1024 * 1024;
/** Most command regexes per rule set, and longest regex source. */
const MAX_COMMANDS = 256;
const MAX_REGEX_CHARS = 1024;
/** Capability that makes a process "privileged" for allowPrivileged: false. */
const PRIVILEGED_CAP = 'CAP_SYS_ADMIN';
/** Where bind mount sources may come from when host mounts are not allowed. */
const GUEST_MOUNT_PREFIX = '/run/kata-containers/';

/** Field rules of CreateContainer / ExecProcess. */
export interface ProcessRules {
  commands?: RegExp[];
  allowPrivileged: boolean;
  allowHostMounts: boolean;
}

/** A parsed, validated policy. */
export interface Policy {
  defaultAllow: boolean;
  rpcs: Map<string, boolean>;
  createContainer?: ProcessRules;
  execProcess?: ProcessRules;
}

const AGENT_METHODS = new Set(METHOD_NAMES.filter((m) => METHODS[m].service === AGENT_SERVICE));

function bad(message: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `invalid policy: ${message}`);
}

function parseRules(v: unknown, where: string, allowMounts: boolean): ProcessRules {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${where} must be an object`);
  const o = v as Record<string, unknown>;
  const known = allowMounts ? ['commands', 'allowPrivileged', 'allowHostMounts'] : ['commands', 'allowPrivileged'];
  for (const k of Object.keys(o)) if (!known.includes(k)) throw bad(`unknown field ${where}.${k} (fields: ${known.join(', ')})`);
  const rules: ProcessRules = { allowPrivileged: true, allowHostMounts: true };
  for (const k of ['allowPrivileged', 'allowHostMounts'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'boolean') throw bad(`${where}.${k} must be a boolean`);
    rules[k] = o[k] as boolean;
  }
  if (o.commands !== undefined) {
    if (!Array.isArray(o.commands) || o.commands.length > MAX_COMMANDS) throw bad(`${where}.commands must be a list of at most ${MAX_COMMANDS} regexes`);
    rules.commands = o.commands.map((r, i) => {
      if (typeof r !== 'string' || r.length > MAX_REGEX_CHARS) throw bad(`${where}.commands[${i}] must be a string of at most ${MAX_REGEX_CHARS} characters`);
      try {
        return new RegExp(`^(?:${r})$`, 'u');
      } catch (err) {
        throw bad(`${where}.commands[${i}] ${JSON.stringify(r)}: ${(err as Error).message}`);
      }
    });
  }
  return rules;
}

/**
 * Parse a policy document (see the module comment). Throws INVALID_ARGUMENT "invalid policy:
 * ..." naming the bad field (upstream answers INVALID_ARGUMENT when applying a policy fails).
 */
export function parsePolicy(text: string): Policy {
  if (Buffer.byteLength(text) > MAX_POLICY_BYTES) throw bad(`larger than ${MAX_POLICY_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message}); see docs/POLICY.md`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('the document must be a JSON object');
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['default', 'rpcs', 'CreateContainer', 'ExecProcess'].includes(k)) throw bad(`unknown field ${JSON.stringify(k)} (fields: default, rpcs, CreateContainer, ExecProcess)`);
  }
  const decision = (v: unknown, where: string): boolean => {
    if (v !== 'allow' && v !== 'deny') throw bad(`${where} must be "allow" or "deny", got ${JSON.stringify(v)}`);
    return v === 'allow';
  };
  const policy: Policy = { defaultAllow: o.default === undefined ? true : decision(o.default, 'default'), rpcs: new Map() };
  if (o.rpcs !== undefined) {
    if (typeof o.rpcs !== 'object' || o.rpcs === null || Array.isArray(o.rpcs)) throw bad('rpcs must be an object');
    for (const [name, v] of Object.entries(o.rpcs)) {
      if (!AGENT_METHODS.has(name as never)) throw bad(`rpcs.${name}: not an AgentService rpc`);
      policy.rpcs.set(name, decision(v, `rpcs.${name}`));
    }
  }
  if (o.CreateContainer !== undefined) policy.createContainer = parseRules(o.CreateContainer, 'CreateContainer', true);
  if (o.ExecProcess !== undefined) policy.execProcess = parseRules(o.ExecProcess, 'ExecProcess', false);
  return policy;
}

function denied(method: string, rule: string): StatusError {
  return new StatusError(Code.PERMISSION_DENIED, `${method}Request is blocked by policy: ${rule}`);
}

function checkProcess(method: string, proc: pb.Process.$Properties | null | undefined, rules: ProcessRules): void {
  const args = proc?.Args ?? [];
  if (rules.commands) {
    const line = args.join(' ');
    if (!rules.commands.some((re) => re.test(line))) throw denied(method, `${method}.commands does not allow ${JSON.stringify(line)}`);
  }
  if (!rules.allowPrivileged) {
    const caps = proc?.Capabilities;
    const sets = [caps?.Bounding, caps?.Effective, caps?.Inheritable, caps?.Permitted, caps?.Ambient];
    if (sets.some((s) => (s ?? []).some((c) => c.toUpperCase() === PRIVILEGED_CAP || c.toUpperCase() === 'SYS_ADMIN'))) {
      throw denied(method, `${method}.allowPrivileged is false and the process has ${PRIVILEGED_CAP}`);
    }
  }
}

/**
 * The policy in force. {@link check} throws PERMISSION_DENIED when `method` (a wire method name)
 * with the decoded `request` (undefined for rpcs whose fields are not inspected) is not allowed.
 */
export class PolicyEngine {
  private policy: Policy | undefined;

  /** Allow everything (the default) until {@link set}. */
  constructor(initial?: Policy) {
    this.policy = initial;
  }

  /** Replace the policy in force. */
  set(policy: Policy): void {
    this.policy = policy;
  }

  /** Whether a policy has been set. */
  get active(): boolean {
    return this.policy !== undefined;
  }

  /** See the class comment. */
  check(method: string, request: object | undefined): void {
    const p = this.policy;
    if (!p) return;
    const explicit = p.rpcs.get(method);
    if (explicit === false) throw denied(method, `rpcs.${method} is "deny"`);
    if (explicit === undefined && !p.defaultAllow) throw denied(method, `default is "deny" and rpcs.${method} is not "allow"`);
    if (method === 'CreateContainer' && p.createContainer && request) {
      const req = request as pb.CreateContainerRequest;
      checkProcess(method, req.OCI?.Process, p.createContainer);
      if (!p.createContainer.allowHostMounts) {
        for (const m of req.OCI?.Mounts ?? []) {
          const isBind = m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
          const src = m.source ?? '';
          if (isBind && !(src.startsWith(GUEST_MOUNT_PREFIX) && !src.split('/').includes('..'))) {
            throw denied(method, `CreateContainer.allowHostMounts is false and ${JSON.stringify(m.destination)} binds ${JSON.stringify(src)}`);
          }
        }
      }
    }
    if (method === 'ExecProcess' && p.execProcess && request) {
      checkProcess(method, (request as pb.ExecProcessRequest).process, p.execProcess);
    }
  }
}
