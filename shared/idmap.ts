/**
 * User-namespace id mappings (OCI config-linux.md#user-namespace-mappings,
 * linux.uidMappings / linux.gidMappings → /proc/<pid>/uid_map, gid_map; user_namespaces(7)).
 * Validated by control (naming the OCI field) and again by the helper (naming the plan field).
 */
import { invalidArgument, type IdMappingPlan } from './protocol';

/** The kernel's limit on lines of a uid_map / gid_map (UID_GID_MAP_MAX_EXTENTS, Linux ≥ 4.15). */
export const MAX_ID_MAP_LINES = 340;
/** Ids are u32; (u32)-1 is never a valid id. */
const ID_LIMIT = 2 ** 32 - 1;

/**
 * Check one mapping list: 1..{@link MAX_ID_MAP_LINES} entries, each with integer containerId and
 * hostId, size ≥ 1, both ranges below 2^32 - 1; no two container ranges and no two host ranges
 * overlap (the kernel refuses both). `field` names the list (e.g. "OCI.Linux.UIDMappings"); the
 * error names the entry and part: INVALID_ARGUMENT "<field>[i].Size 0: ...".
 * `names` gives the part names as the caller's schema spells them.
 */
export function validateIdMappings(
  field: string,
  list: readonly IdMappingPlan[],
  names: { containerId: string; hostId: string; size: string } = { containerId: 'containerId', hostId: 'hostId', size: 'size' },
): IdMappingPlan[] {
  if (list.length === 0) throw invalidArgument(`${field} is empty: a user namespace needs at least one mapping`);
  if (list.length > MAX_ID_MAP_LINES) throw invalidArgument(`${field} has ${list.length} entries, the kernel accepts at most ${MAX_ID_MAP_LINES}`);
  const out: IdMappingPlan[] = [];
  list.forEach((m, i) => {
    const f = `${field}[${i}]`;
    for (const k of ['containerId', 'hostId', 'size'] as const) {
      const v = m[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > ID_LIMIT) {
        throw invalidArgument(`${f}.${names[k]} ${JSON.stringify(v)} must be an integer in 0..${ID_LIMIT}`);
      }
    }
    if (m.size === 0) throw invalidArgument(`${f}.${names.size} 0: a mapping must cover at least one id`);
    for (const k of ['containerId', 'hostId'] as const) {
      if (m[k] + m.size > ID_LIMIT) {
        throw invalidArgument(`${f}.${names[k]} ${m[k]} + ${names.size} ${m.size} goes past the largest id ${ID_LIMIT - 1}`);
      }
    }
    for (const [j, o] of out.entries()) {
      for (const k of ['containerId', 'hostId'] as const) {
        if (m[k] < o[k] + o.size && o[k] < m[k] + m.size) {
          throw invalidArgument(`${f}.${names[k]} range ${m[k]}..${m[k] + m.size - 1} overlaps ${field}[${j}] (${o[k]}..${o[k] + o.size - 1})`);
        }
      }
    }
    out.push({ containerId: m.containerId, hostId: m.hostId, size: m.size });
  });
  return out;
}

/** The text written to /proc/<pid>/uid_map or gid_map: "containerId hostId size" lines. */
export function idMapText(list: readonly IdMappingPlan[]): string {
  return list.map((m) => `${m.containerId} ${m.hostId} ${m.size}\n`).join('');
}
