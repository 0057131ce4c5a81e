// cgroup v2 device programs: the addon's bpfDeviceProgram (helper/native/bpf-devices.cc). No
// root: the generated eBPF program is run through a small interpreter of the instructions it
// uses, against struct bpf_cgroup_dev_ctx records, and its decisions are compared with a
// reference reading of the rules (per access bit, the last matching rule decides; default deny).
// test/integration/devices-v2.test.ts loads the same programs into the kernel.
import t from 'tap';
import { loadNative, type BpfDeviceRule } from '../../shared/native';

const native = loadNative();

// linux/bpf.h BPF_DEVCG_*: access bits (<< 16 in access_type) and device types.
const ACC = { m: 1, r: 2, w: 4 } as const;
const DEV = { b: 1, c: 2 } as const;
const MASK64 = (1n << 64n) - 1n;

/** Run the program on one device access; returns r0 (1 allow, 0 deny). Throws on an instruction the generator should not emit. */
function run(prog: Buffer, type: 'b' | 'c', major: number, minor: number, access: number): number {
  const ctx = [(access << 16) | DEV[type], major, minor];
  const reg: bigint[] = new Array<bigint>(11).fill(0n);
  const n = prog.length / 8;
  for (let pc = 0, steps = 0; pc < n; pc++, steps++) {
    if (steps > 100000) throw new Error('program does not end');
    const code = prog.readUInt8(pc * 8);
    const regs = prog.readUInt8(pc * 8 + 1);
    const dst = regs & 0xf;
    const src = regs >> 4;
    const off = prog.readInt16LE(pc * 8 + 2);
    const imm = BigInt.asUintN(64, BigInt(prog.readInt32LE(pc * 8 + 4)));
    switch (code) {
      case 0x61: // ldx w [src+off]: the ctx's u32 fields
        if (src !== 1 || off % 4 !== 0 || off / 4 > 2) throw new Error(`bad ctx load at ${pc}`);
        reg[dst] = BigInt(ctx[off / 4] >>> 0);
        break;
      case 0xbf: reg[dst] = reg[src]; break; // mov64 x
      case 0xb7: reg[dst] = imm; break; // mov64 k
      case 0x77: reg[dst] = (reg[dst] >> imm) & MASK64; break; // rsh64 k
      case 0x57: reg[dst] = reg[dst] & imm; break; // and64 k
      case 0x55: if (reg[dst] !== imm) pc += off; break; // jne k
      case 0x15: if (reg[dst] === imm) pc += off; break; // jeq k
      case 0x95: return Number(reg[0]); // exit
      default: throw new Error(`unexpected opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error('fell off the end');
}

/** The reference: every asked bit must be allowed by the last rule that matches the device and holds the bit. */
function reference(rules: BpfDeviceRule[], type: 'b' | 'c', major: number, minor: number, access: number): number {
  for (const bit of [ACC.m, ACC.r, ACC.w]) {
    if ((access & bit) === 0) continue;
    let allowed = false;
    for (const r of rules) {
      const matches = (r.type === 'a' || r.type === type) && (r.major === -1 || r.major === major) && (r.minor === -1 || r.minor === minor);
      const bits = [...r.access].reduce((a, c) => a | ACC[c as 'r' | 'w' | 'm'], 0);
      if (matches && (bits & bit) !== 0) allowed = r.allow;
    }
    if (!allowed) return 0;
  }
  return 1;
}

const rule = (allow: boolean, type: string, major: number, minor: number, access: string): BpfDeviceRule => ({ allow, type, major, minor, access });

t.test('scenarios: wildcard deny punches a hole, default deny, last match wins', async (t) => {
  const cases: [string, BpfDeviceRule[], ['b' | 'c', number, number, number, number][]][] = [
    ['no rules: everything denied', [], [['c', 1, 3, ACC.r, 0], ['b', 7, 0, ACC.m, 0]]],
    [
      'allow all then deny c 1:3 w: writes and read-write opens denied, reads allowed',
      [rule(true, 'a', -1, -1, 'rwm'), rule(false, 'c', 1, 3, 'w')],
      [['c', 1, 3, ACC.r, 1], ['c', 1, 3, ACC.w, 0], ['c', 1, 3, ACC.r | ACC.w, 0], ['c', 1, 5, ACC.w, 1], ['b', 1, 3, ACC.w, 1]],
    ],
    [
      'deny all then the defaults (runc order): /dev/null rw, any mknod of c, block reads denied',
      [rule(false, 'a', -1, -1, 'rwm'), rule(true, 'c', -1, -1, 'm'), rule(true, 'c', 1, 3, 'rwm'), rule(true, 'c', 136, -1, 'rwm')],
      [['c', 1, 3, ACC.r | ACC.w, 1], ['c', 9, 9, ACC.m, 1], ['c', 9, 9, ACC.r, 0], ['c', 136, 4, ACC.w, 1], ['b', 8, 0, ACC.r, 0], ['b', 8, 0, ACC.m, 0]],
    ],
    [
      'a later deny of c *:* m takes mknod back from the earlier allow (not a v1 exact-match deny)',
      [rule(true, 'c', -1, -1, 'rwm'), rule(false, 'c', -1, -1, 'm')],
      [['c', 1, 5, ACC.m, 0], ['c', 1, 5, ACC.r, 1]],
    ],
    [
      'bits allowed by different rules add up (r from one, w from another)',
      [rule(true, 'c', 10, 200, 'r'), rule(true, 'c', 10, -1, 'w')],
      [['c', 10, 200, ACC.r | ACC.w, 1], ['c', 10, 201, ACC.r | ACC.w, 0], ['c', 10, 201, ACC.w, 1]],
    ],
    [
      'an earlier deny does not take back a bit a later rule allowed',
      [rule(false, 'b', 7, 0, 'rw'), rule(true, 'b', 7, 0, 'r')],
      [['b', 7, 0, ACC.r, 1], ['b', 7, 0, ACC.r | ACC.w, 0], ['c', 7, 0, ACC.r, 0]],
    ],
  ];
  for (const [name, rules, probes] of cases) {
    const prog = native.bpfDeviceProgram(rules);
    for (const [type, major, minor, access, want] of probes) {
      t.equal(run(prog, type, major, minor, access), want, `${name}: ${type} ${major}:${minor} access ${access}`);
      t.equal(reference(rules, type, major, minor, access), want, `reference agrees: ${name}: ${type} ${major}:${minor}`);
    }
  }
});

t.test('random rule sets: the program decides as the reference for every device and access', async (t) => {
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  // review 6: the largest numbers, 0, an empty and a repeated access string are edge cases too
  const majors = [-1, 1, 5, 136, 0, 0xfffff];
  const minors = [-1, 0, 3, 5, 0xfffff];
  const accesses = ['r', 'w', 'm', 'rw', 'rm', 'wm', 'rwm', '', 'rrw'];
  let mismatches = 0;
  let probes = 0;
  for (let set = 0; set < 200; set++) {
    const rules: BpfDeviceRule[] = [];
    for (let i = rand(8); i > 0; i--) {
      rules.push(rule(rand(2) === 0, ['a', 'b', 'c'][rand(3)], majors[rand(majors.length)], minors[rand(minors.length)], accesses[rand(accesses.length)]));
    }
    const prog = native.bpfDeviceProgram(rules);
    for (const type of ['b', 'c'] as const) {
      for (const major of [1, 5, 136, 7, 0, 0xfffff]) {
        for (const minor of [0, 3, 5, 9, 0xfffff]) {
          for (let access = 1; access <= 7; access++) {
            probes++;
            if (run(prog, type, major, minor, access) !== reference(rules, type, major, minor, access)) mismatches++;
          }
        }
      }
    }
  }
  t.equal(mismatches, 0, `no mismatch in ${probes} decisions`);
});

t.test('program size: 6 prologue + at most 8 per rule + 2 instructions', async (t) => {
  t.equal(native.bpfDeviceProgram([]).length / 8, 8);
  const rules = Array.from({ length: 1024 }, (_, i) => rule(i % 2 === 0, 'c', i, i, 'rwm'));
  t.ok(native.bpfDeviceProgram(rules).length / 8 <= 8 + 8 * 1024);
});

t.test('malformed rules are TypeErrors naming the rule and field', async (t) => {
  const bad: [unknown, RegExp][] = [
    ['x', /rules must be an array/],
    [[rule(true, 'u', -1, -1, 'r')], /rules\[0\]\.type must be "a", "b" or "c"/],
    [[rule(true, 'c', -2, -1, 'r')], /rules\[0\]\.major must be -1/],
    [[rule(true, 'c', 1, 0x100000, 'r')], /rules\[0\]\.minor must be -1/],
    [[rule(true, 'c', 1, 1.5, 'r')], /rules\[0\]\.minor/],
    [[rule(true, 'c', Infinity, 1, 'r')], /rules\[0\]\.major/],
    [[rule(true, 'c', NaN, 1, 'r')], /rules\[0\]\.major/],
    [[rule(true, 'c', 1, -Infinity, 'r')], /rules\[0\]\.minor/],
    [[rule(true, 'c', 2 ** 32 + 1, 1, 'r')], /rules\[0\]\.major/],
    [[rule(true, 'c', 1, 1, 'rx')], /rules\[0\]\.access must be letters of "rwm"/],
    [[{ type: 'c', major: 1, minor: 1, access: 'r' }], /rules\[0\]\.allow must be a boolean/],
    [Array.from({ length: 1025 }, () => rule(true, 'a', -1, -1, 'r')), /more than 1024/],
  ];
  for (const [rules, re] of bad) {
    t.throws(() => native.bpfDeviceProgram(rules as BpfDeviceRule[]), { name: 'TypeError', message: re });
  }
});
