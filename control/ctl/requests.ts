/**
 * Building the request of one kata-agent-ctl API command from its argument text and the values
 * remembered during the run, in the spirit of upstream agent-ctl (client.rs agent_cmd_*,
 * utils.rs get_option / make_request; kata-containers 6e4d4c329a).
 *
 * Sources of a request field, highest precedence first:
 *  1. a `key=value` word of this command (e.g. `cid=abc` sets container_id);
 *  2. the `json://{...}` / `file://...` document of this command (proto field names);
 *  3. a value remembered from an earlier command of the run (`cid`, `sid`, `exec_id`, `signal`,
 *     ... and any other key given before);
 *  4. with auto values on (the default): a generated value — random 64-hex cid/sid, exec_id =
 *     the container id, signal SIGKILL, CreateContainer's OCI spec from `<bundle>/config.json`
 *     (or `spec=file:///...`), ExecProcess's process from that spec's process, GetGuestDetails'
 *     mem_block_size and mem_hotplug_probe = true.
 *
 * Departures from upstream, all for usability of a stand-alone client:
 *  - Upstream lets remembered/generated values override fields of the JSON document, and with
 *    --no-auto-values ignores key=value words entirely. Here the document beats remembered and
 *    generated values, and key=value words and remembered values apply with or without auto
 *    values (--no-auto-values only turns off generation).
 *  - Ids found in the document (container_id, exec_id, sandbox_id) are remembered too.
 *  - Setting a new container id (by key or document) without an exec id forgets the remembered
 *    exec id, so exec_id follows the new container id; upstream keeps the first derived one.
 *  - Any scalar field of the request can be set as `field=value` (e.g. `hostname=box`,
 *    `volume_guest_path=/x`); upstream knows a fixed list of keys.
 *  - An unknown field in the document, at any depth, is an error naming its path and the proto
 *    field it probably meant (e.g. OCI-style "process" for "Process"; control/ctl/doc-keys.ts);
 *    upstream's serde ignores it.
 *
 * Document values are converted as protobufjs `fromObject` does: bytes fields take a base64
 * string or an array of byte values, enums a name or a number, 64-bit integers a number or a
 * decimal string; scalars of another JSON type are coerced (5 → "5"), while a non-object where
 * a message belongs is an error.
 */
import * as path from 'node:path';
import { invalidArgument as invalid } from '../../shared/protocol';
import {
  parseBool,
  parseCommandArgs,
  parseHexAddressList,
  parseInteger,
  parsePciPath,
  readFileArg,
  randomId,
  readJsonFile,
  signalNumber,
  strToBytes,
} from './args';
import { METHODS, messageFieldNames, type MethodName } from './methods';
import { checkDocumentKeys, messageType } from './doc-keys';
import { ociJsonToSpec } from './oci-json';

/** The run-wide state a request is built with. */
export interface RequestContext {
  /** Values remembered across the commands of one run (key → raw text), updated by buildRequest. */
  values: Map<string, string>;
  /** Generate missing values (random ids, spec from the bundle, ...). */
  autoValues: boolean;
  /** OCI bundle directory ("" = none): `<bundleDir>/config.json` is the default spec. */
  bundleDir: string;
  /** Send the spec's Hostname as "" (upstream agent-ctl behaviour). */
  clearHostname: boolean;
}

/** A built request. */
export interface BuiltRequest {
  method: MethodName;
  /** The request message (an instance of the method's generated request class). */
  request: object;
  /** Notes for the user (e.g. a key this request has no field for). */
  warnings: string[];
}

type Json = { [k: string]: unknown };

const U32_MAX = 0xffffffff;
const I32_MIN = -0x80000000;
const I32_MAX = 0x7fffffff;

/** A known key: the request field it sets, how its text is parsed, how it is generated. */
interface KeySpec {
  field: string;
  parse(text: string, key: string): unknown;
  /** Generated value (auto values on, nothing else given); undefined = none. */
  auto?(request: Json): string | undefined;
  /** Remember generated values (upstream stores generated cid/sid). */
  rememberAuto?: boolean;
  /** The field's own name is not an alias of this key (policy= is the text, policy_file= a file). */
  noFieldAlias?: boolean;
}

const str = (text: string): string => text;
const u32 = (text: string, key: string): number => parseInteger(text, key, 0, U32_MAX);
const i32 = (text: string, key: string): number => parseInteger(text, key, I32_MIN, I32_MAX);
const i64 = (text: string, key: string): number => parseInteger(text, key, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
const bool = (text: string, key: string): boolean => parseBool(text, key);

/**
 * The keys upstream agent-ctl knows, in the order they are applied (cid before exec_id, whose
 * generated value is the container id).
 */
export const KEYS: Readonly<Record<string, KeySpec>> = {
  cid: { field: 'container_id', parse: str, auto: () => randomId(), rememberAuto: true },
  sid: { field: 'sandbox_id', parse: str, auto: () => randomId(), rememberAuto: true },
  exec_id: {
    field: 'exec_id',
    parse: str,
    auto: (request) => (typeof request.container_id === 'string' && request.container_id !== '' ? request.container_id : undefined),
  },
  signal: { field: 'signal', parse: (t) => signalNumber(t), auto: () => 'SIGKILL' },
  row: { field: 'row', parse: u32 },
  column: { field: 'column', parse: u32 },
  /** ReadStdout/ReadStderr bytes; generated: 64 KiB (upstream sends 0, which only reads EOF). */
  len: { field: 'len', parse: u32, auto: () => '65536' },
  /** RemoveContainer timeout, in seconds (0 = wait forever). */
  timeout: { field: 'timeout', parse: u32 },
  data: { field: 'data', parse: (t) => strToBytes(t) },
  path: { field: 'path', parse: str },
  file_size: { field: 'file_size', parse: i64 },
  file_mode: { field: 'file_mode', parse: u32 },
  dir_mode: { field: 'dir_mode', parse: u32 },
  uid: { field: 'uid', parse: i32 },
  gid: { field: 'gid', parse: i32 },
  offset: { field: 'offset', parse: i64 },
  wait: { field: 'wait', parse: bool },
  nb_cpus: { field: 'nb_cpus', parse: u32 },
  cpu_only: { field: 'cpu_only', parse: bool },
  sec: { field: 'Sec', parse: i64 },
  usec: { field: 'Usec', parse: i64 },
  memHotplugProbeAddr: { field: 'memHotplugProbeAddr', parse: (t) => parseHexAddressList(t) },
  /** AddSwap: the PCI path of the swap disk, hex slots "02/03". */
  pci_path: { field: 'PCIPath', parse: (t) => parsePciPath(t) },
  /** SetPolicy: the policy document from a file (`policy_file=file:///path`); `policy=...` takes the text. */
  policy_file: { field: 'policy', parse: (t, k) => readFileArg(t, k), noFieldAlias: true },
  /** GetVolumeStats / ResizeVolume. */
  volume: { field: 'volume_guest_path', parse: str },
  size: { field: 'size', parse: i64 },
};

/** Field names accepted as keys for the known key that sets them (`container_id=x` is `cid=x`). */
const FIELD_TO_KEY: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(KEYS)
    .filter(([key, spec]) => key !== spec.field && spec.noFieldAlias !== true)
    .map(([key, spec]) => [spec.field, key]),
);

/** Parser for a field set by its own name (`field=value`), chosen from the field's default; null if not a scalar. */
function genericParser(proto: Json, field: string): ((text: string, key: string) => unknown) | null {
  const dflt = proto[field];
  if (typeof dflt === 'string') return str;
  if (typeof dflt === 'boolean') return bool;
  if (typeof dflt === 'number') return i64;
  if (dflt instanceof Uint8Array) return (t) => strToBytes(t);
  return null;
}

/** The type name of a request codec, e.g. "grpc.WaitProcessRequest". */
function typeName(method: MethodName): string {
  return METHODS[method].request.getTypeUrl('').replace(/^\//, '');
}

/**
 * Load the OCI spec for CreateContainer/ExecProcess: the file named by a remembered
 * `spec=file:///...`, else `<bundleDir>/config.json`. A relative root.path resolves against
 * the bundle dir (or the spec file's directory when no bundle dir was given).
 * Throws INVALID_ARGUMENT when neither is available or the file is not a valid spec, NOT_FOUND
 * when the file does not exist.
 */
export function loadSpec(ctx: RequestContext, method: string): ReturnType<typeof ociJsonToSpec> {
  const specPath = ctx.values.get('spec') ?? (ctx.bundleDir !== '' ? path.join(ctx.bundleDir, 'config.json') : '');
  if (specPath === '') {
    throw invalid(`${method} needs an OCI spec: give --bundle-dir DIR, spec=file:///path/config.json or json://{...} with the request`);
  }
  const json = readJsonFile(specPath);
  const bundleDir = ctx.bundleDir !== '' ? ctx.bundleDir : path.dirname(specPath);
  return ociJsonToSpec(json, bundleDir, { clearHostname: ctx.clearHostname });
}

/**
 * Build the request of API command `method` from `argText` (the words after the command name)
 * and the run state `ctx`; see the module comment for where each field comes from. Updates
 * `ctx.values` (explicit keys, ids from the document, generated ids).
 *
 * Throws StatusError INVALID_ARGUMENT for malformed arguments (bad key value, bad JSON, unknown
 * document field, a value of the wrong type for its field, a missing spec), NOT_FOUND for a
 * missing file.
 */
export function buildRequest(method: MethodName, argText: string, ctx: RequestContext): BuiltRequest {
  const codec = METHODS[method].request;
  const proto = codec.prototype as Json;
  const fields = new Set(messageFieldNames(codec));
  const args = parseCommandArgs(argText);
  const doc: Json = args.document ?? {};
  const warnings: string[] = [];

  const unknown = Object.keys(doc).filter((k) => !fields.has(k));
  if (unknown.length > 0) {
    throw invalid(`unknown field ${JSON.stringify(unknown[0])} in ${typeName(method)} (fields: ${[...fields].join(', ') || 'none'})`);
  }
  // Nested keys too: fromObject would drop an unknown one (e.g. OCI-style "process") silently.
  if (args.document) checkDocumentKeys(messageType(typeName(method)), doc);

  const explicit = new Map<string, string>();
  for (const [key, value] of args.pairs) {
    if (key === 'spec') {
      if (!value.startsWith('file://') || value.length === 'file://'.length) {
        throw invalid(`spec=${value}: want spec=file:///path/to/config.json`);
      }
      ctx.values.set('spec', value.slice('file://'.length));
      continue;
    }
    explicit.set(FIELD_TO_KEY[key] ?? key, value);
  }

  // A new container id without an exec id: forget the remembered exec id (it belonged to the old container).
  const newCid = explicit.has('cid') || (typeof doc.container_id === 'string' && doc.container_id !== '');
  const newExecId = explicit.has('exec_id') || (typeof doc.exec_id === 'string' && doc.exec_id !== '');
  if (newCid && !newExecId) ctx.values.delete('exec_id');
  for (const [key, value] of explicit) ctx.values.set(key, value);
  if (typeof doc.container_id === 'string' && doc.container_id !== '' && !explicit.has('cid')) ctx.values.set('cid', doc.container_id);
  if (typeof doc.exec_id === 'string' && doc.exec_id !== '' && !explicit.has('exec_id')) ctx.values.set('exec_id', doc.exec_id);
  if (typeof doc.sandbox_id === 'string' && doc.sandbox_id !== '' && !explicit.has('sid')) ctx.values.set('sid', doc.sandbox_id);

  const obj: Json = { ...doc };

  // Generated sub-messages (auto values, field not in the document).
  if (ctx.autoValues) {
    if (method === 'CreateContainer' && !('OCI' in doc)) obj.OCI = loadSpec(ctx, method);
    if (method === 'ExecProcess' && !('process' in doc)) {
      const spec = loadSpec(ctx, method);
      if (!spec.Process) throw invalid(`ExecProcess: the OCI spec has no process to run`);
      obj.process = spec.Process;
    }
    if (method === 'GetGuestDetails') {
      if (!('mem_block_size' in doc)) obj.mem_block_size = true;
      if (!('mem_hotplug_probe' in doc)) obj.mem_hotplug_probe = true;
    }
  }

  const used = new Set<string>();
  for (const [key, spec] of Object.entries(KEYS)) {
    if (!fields.has(spec.field)) continue;
    let text: string | undefined;
    if (explicit.has(key)) text = explicit.get(key);
    else if (spec.field in doc) continue;
    else if (ctx.values.has(key)) text = ctx.values.get(key);
    else if (ctx.autoValues && spec.auto) {
      text = spec.auto(obj);
      if (text !== undefined && spec.rememberAuto) ctx.values.set(key, text);
    }
    if (text === undefined) continue;
    obj[spec.field] = spec.parse(text, key);
    used.add(key);
  }

  // Any other scalar field by its own name, from this command or remembered.
  const genericKeys = new Set([...ctx.values.keys()].filter((k) => !(k in KEYS) && k !== 'spec'));
  for (const key of genericKeys) {
    if (!fields.has(key)) continue;
    const parse = genericParser(proto, key);
    if (!parse) {
      if (explicit.has(key)) throw invalid(`${key}=... cannot set ${typeName(method)}.${key} (not a scalar field); use json://{...}`);
      continue;
    }
    if (!explicit.has(key) && key in doc) continue;
    obj[key] = parse(ctx.values.get(key) as string, key);
    used.add(key);
  }

  for (const key of explicit.keys()) {
    if (!used.has(key)) warnings.push(`key ${JSON.stringify(key)} is not a field of ${typeName(method)}; remembered for later commands`);
  }

  let request: object;
  try {
    request = codec.fromObject(obj);
  } catch (err) {
    throw invalid(`invalid ${method} request: ${(err as Error).message}`);
  }
  return { method, request, warnings };
}
