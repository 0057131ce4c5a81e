/**
 * kata-agent-ctl: every key of a json:// / file:// request document must be a field of the
 * message it is in, at any depth. protobufjs `fromObject` silently drops unknown keys, so an
 * OCI-style lowercase key (`"process"`, `"args"` from a config.json) inside `OCI` would vanish
 * and the agent would get an empty field. Here it is refused with a message naming the path and
 * the proto field it probably meant (the document uses proto field names; a whole OCI
 * config.json is taken as-is by `spec=file:///path/config.json`).
 */
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { Code, StatusError } from '../../shared/protocol';

const PROTO_FILES = ['agent.proto', 'oci.proto', 'csi.proto', 'types.proto', 'health.proto'];
let root: protobuf.Root | null = null;

function protoRoot(): protobuf.Root {
  if (root) return root;
  const dir = path.resolve(__dirname, '..', '..', '..', 'protos');
  const r = new protobuf.Root();
  r.loadSync(PROTO_FILES.map((f) => path.join(dir, f)), { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

/** The reflected message type `fullName` (e.g. "grpc.CreateContainerRequest"). */
export function messageType(fullName: string): protobuf.Type {
  return protoRoot().lookupType(fullName);
}

/**
 * Throw StatusError INVALID_ARGUMENT for the first key of `doc` (recursively, through messages,
 * repeated messages and map values) that is not a field of `type`:
 * `unknown field "process" at OCI.process of grpc.Spec (did you mean "Process"? the document takes proto field names)`.
 * Values that are not objects where a message belongs are left to fromObject's own errors.
 */
export function checkDocumentKeys(type: protobuf.Type, doc: unknown, where = ''): void {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return;
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    const at = where === '' ? key : `${where}.${key}`;
    const field = type.fields[key] ?? null;
    if (!field) {
      if (type.oneofs?.[key]) continue;
      const names = Object.keys(type.fields);
      const near = names.find((n) => n.toLowerCase() === key.toLowerCase()) ?? names.find((n) => n.toLowerCase().replace(/_/g, '') === key.toLowerCase().replace(/_/g, ''));
      const hint = near ? ` (did you mean "${near}"? the document takes proto field names; a whole OCI config.json goes in spec=file:///path)` : ` (fields: ${names.join(', ') || 'none'})`;
      throw new StatusError(Code.INVALID_ARGUMENT, `unknown field "${key}" at ${at} of ${type.fullName.replace(/^\./, '')}${hint}`);
    }
    const sub = field.resolvedType;
    if (!(sub instanceof protobuf.Type)) continue;
    if (field instanceof protobuf.MapField) {
      if (typeof value === 'object' && value !== null) for (const [k, v] of Object.entries(value)) checkDocumentKeys(sub, v, `${at}[${JSON.stringify(k)}]`);
    } else if (field.repeated && Array.isArray(value)) {
      value.forEach((v, i) => checkDocumentKeys(sub, v, `${at}[${i}]`));
    } else {
      checkDocumentKeys(sub, value, at);
    }
  }
}
