// Seccomp compilation: the addon's seccompCompile (libseccomp, helper/native/seccomp.cc) and the
// helper's compileSeccomp (helper/ops/seccomp.ts). No root: the compiled BPF program is not
// loaded here but run through a small classic-BPF interpreter against seccomp_data records,
// so the tests check what the kernel would decide for a given syscall and arguments.
import t from 'tap';
import { loadNative, type NativeAddon, type SeccompProfile } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { BPF_MAXINSNS, compileSeccomp } from '../../helper/ops/seccomp';
import { validateSeccomp } from '../../helper/ops/plan';

const native = loadNative();

// seccomp return values (linux/seccomp.h).
const RET = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
};
const AUDIT_ARCH_X86_64 = 0xc000003e;
const AUDIT_ARCH_I386 = 0x40000003;
// x86_64 syscall numbers (asm/unistd_64.h) and i386 ones (asm/unistd_32.h).
const NR = { getpid: 39, socket: 41, personality: 135, mkdir: 83, mkdirat: 258, getuid: 102 };
const NR32 = { mkdir: 39, getuid32: 199 };

/**
 * Run a classic BPF program (struct sock_filter array, little-endian host) on a seccomp_data
 * record {nr, arch, instruction_pointer, args[6]}; returns the 32-bit return value. Supports
 * the instructions libseccomp emits (and a few more); anything else throws.
 */
function runBpf(bpf: Buffer, nr: number, arch: number, args: bigint[] = []): number {
  const data = Buffer.alloc(64);
  data.writeInt32LE(nr, 0);
  data.writeUInt32LE(arch, 4);
  for (let i = 0; i < 6; i++) data.writeBigUInt64LE(args[i] ?? 0n, 16 + 8 * i);
  const n = bpf.length / 8;
  let A = 0;
  let X = 0;
  const M = new Array<number>(16).fill(0);
  for (let pc = 0, steps = 0; pc < n; pc++) {
    if (++steps > 100_000) throw new Error('BPF program does not terminate');
    const code = bpf.readUInt16LE(pc * 8);
    const jt = bpf.readUInt8(pc * 8 + 2);
    const jf = bpf.readUInt8(pc * 8 + 3);
    const k = bpf.readUInt32LE(pc * 8 + 4);
    const cls = code & 0x07;
    const src = code & 0x08 ? X : k;
    switch (cls) {
      case 0x00: // LD
        if (code === 0x20) A = data.readUInt32LE(k); // W ABS
        else if (code === 0x00) A = k; // IMM
        else if (code === 0x60) A = M[k]; // MEM
        else throw new Error(`unsupported LD ${code.toString(16)}`);
        break;
      case 0x01: // LDX
        if (code === 0x01) X = k;
        else if (code === 0x61) X = M[k];
        else throw new Error(`unsupported LDX ${code.toString(16)}`);
        break;
      case 0x02:
        M[k] = A;
        break;
      case 0x03:
        M[k] = X;
        break;
      case 0x04: {
        const op = code & 0xf0;
        if (op === 0x00) A = (A + src) >>> 0;
        else if (op === 0x10) A = (A - src) >>> 0;
        else if (op === 0x50) A = (A & src) >>> 0;
        else if (op === 0x40) A = (A | src) >>> 0;
        else if (op === 0x60) A = (A << src) >>> 0;
        else if (op === 0x70) A = A >>> src;
        else throw new Error(`unsupported ALU ${code.toString(16)}`);
        break;
      }
      case 0x05: {
        const op = code & 0xf0;
        if (op === 0x00) {
          pc += k;
          break;
        }
        let cond: boolean;
        if (op === 0x10) cond = A === src >>> 0;
        else if (op === 0x20) cond = A > src >>> 0;
        else if (op === 0x30) cond = A >= src >>> 0;
        else if (op === 0x40) cond = (A & src) !== 0;
        else throw new Error(`unsupported JMP ${code.toString(16)}`);
        pc += cond ? jt : jf;
        break;
      }
      case 0x06:
        return (code & 0x18) === 0x10 ? A : k;
      case 0x07:
        if (code === 0x07) X = A;
        else if (code === 0x87) A = X;
        else throw new Error(`unsupported MISC ${code.toString(16)}`);
        break;
    }
  }
  throw new Error('BPF program ran off its end');
}

const x64 = process.arch === 'x64';
const run64 = (bpf: Buffer, nr: number, args: bigint[] = []): number => runBpf(bpf, nr, AUDIT_ARCH_X86_64, args);

t.test('default allow with an ERRNO rule for mkdir: a non-empty program that denies mkdir only', { skip: !x64 && 'x86_64 syscall numbers' }, async (t) => {
  const out = native.seccompCompile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
  });
  t.ok(Buffer.isBuffer(out.bpf), 'bpf is a Buffer');
  t.ok(out.bpf.length > 0 && out.bpf.length % 8 === 0, `a whole number of instructions (${out.bpf.length / 8})`);
  t.equal(out.flags, 0);
  t.same(out.skipped, []);
  t.equal(run64(out.bpf, NR.mkdir), RET.ERRNO | 1, 'mkdir → EPERM');
  t.equal(run64(out.bpf, NR.mkdirat), RET.ERRNO | 1, 'mkdirat → EPERM');
  t.equal(run64(out.bpf, NR.getpid), RET.ALLOW, 'getpid allowed');
  t.equal(runBpf(out.bpf, NR.mkdir, AUDIT_ARCH_I386), RET.KILL_THREAD, 'a foreign architecture is killed (libseccomp\'s bad-arch action)');
});

t.test('errno defaults to EPERM; actions; argument comparisons (EQ, MASKED_EQ as mask/datum, GE)', { skip: !x64 && 'x86_64 syscall numbers' }, async (t) => {
  const out = native.seccompCompile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [
      { names: ['mkdir'], action: 'SCMP_ACT_ERRNO' },
      { names: ['socket'], action: 'SCMP_ACT_ERRNO', errnoRet: 97, args: [{ index: 0, op: 'SCMP_CMP_EQ', value: 2 }] },
      // OCI: value is the mask, valueTwo the datum.
      { names: ['personality'], action: 'SCMP_ACT_ERRNO', errnoRet: 22, args: [{ index: 0, op: 'SCMP_CMP_MASKED_EQ', value: 0xff, valueTwo: 8 }] },
      { names: ['getuid'], action: 'SCMP_ACT_TRAP', args: [{ index: 1, op: 'SCMP_CMP_GE', value: 2n ** 40n }] },
      { names: ['getpid'], action: 'SCMP_ACT_ALLOW' }, // the default action: skipped
    ],
  });
  t.equal(run64(out.bpf, NR.mkdir), RET.ERRNO | 1, 'no errnoRet: EPERM');
  t.equal(run64(out.bpf, NR.socket, [2n]), RET.ERRNO | 97, 'socket(AF_INET) → EAFNOSUPPORT');
  t.equal(run64(out.bpf, NR.socket, [1n]), RET.ALLOW, 'socket(AF_UNIX) allowed');
  t.equal(run64(out.bpf, NR.personality, [0x1008n]), RET.ERRNO | 22, 'personality(0x1008): 0x1008 & 0xff == 8');
  t.equal(run64(out.bpf, NR.personality, [0x9n]), RET.ALLOW, 'personality(9): 9 & 0xff != 8');
  t.equal(run64(out.bpf, NR.getuid, [0n, 2n ** 40n]), RET.TRAP, 'a 64-bit comparison on arg 1 (bigint value)');
  t.equal(run64(out.bpf, NR.getuid, [0n, 2n ** 32n]), RET.ALLOW, 'below it: allowed');
  t.equal(run64(out.bpf, NR.getpid), RET.ALLOW);

  const deny = native.seccompCompile({
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 38,
    syscalls: [{ names: ['getpid'], action: 'SCMP_ACT_ALLOW' }, { names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }],
  });
  t.equal(run64(deny.bpf, NR.getpid), RET.ALLOW, 'allow-list entry');
  t.equal(run64(deny.bpf, NR.socket), RET.ERRNO | 38, 'everything else: the default errno');
  t.equal(run64(deny.bpf, NR.mkdir), RET.ERRNO | 38, 'a rule equal to the default is skipped, not an error');
  t.equal(run64(native.seccompCompile({ defaultAction: 'SCMP_ACT_KILL_PROCESS' }).bpf, NR.getpid), RET.KILL_PROCESS);
  t.equal(run64(native.seccompCompile({ defaultAction: 'SCMP_ACT_LOG' }).bpf, NR.getpid), RET.LOG);
  t.equal(run64(native.seccompCompile({ defaultAction: 'SCMP_ACT_TRACE' }).bpf, NR.getpid), RET.TRACE | 1, 'trace message EPERM by default');
});

t.test('unknown syscall names are skipped and reported (field case B23)', { skip: !x64 && 'x86_64 syscall numbers' }, async (t) => {
  const out = native.seccompCompile({
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: ['getuid', 'getuid32', 'no_such_syscall_xyz'], action: 'SCMP_ACT_ERRNO' },
      { names: ['another_fake', 'no_such_syscall_xyz', 'mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 },
    ],
  });
  t.same(out.skipped, ['no_such_syscall_xyz', 'another_fake'], 'each unknown name once, in profile order');
  t.equal(run64(out.bpf, NR.getuid), RET.ERRNO | 1, 'the valid names of the same rule still apply');
  t.equal(run64(out.bpf, NR.mkdir), RET.ERRNO | 13);
  t.equal(runBpf(out.bpf, NR32.getuid32, AUDIT_ARCH_I386), RET.ERRNO | 1, 'getuid32 (a 32-bit-only name) applies on i386');
  t.equal(runBpf(out.bpf, NR32.mkdir, AUDIT_ARCH_I386), RET.ERRNO | 13, 'rules apply to every listed architecture');
});

t.test('flags: kernel bits returned; attributes set', async (t) => {
  const out = native.seccompCompile({
    defaultAction: 'SCMP_ACT_ALLOW',
    flags: ['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'],
  });
  t.equal(out.flags, 1 | 2 | 4);
  t.equal(native.seccompCompile({ defaultAction: 'SCMP_ACT_ALLOW', flags: ['SECCOMP_FILTER_FLAG_LOG'] }).flags, 2);
});

t.test('bad input is a TypeError, never a crash', async (t) => {
  const compile = native.seccompCompile as unknown as (p: unknown) => unknown;
  const rule = (r: Record<string, unknown>): unknown => ({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', ...r }] });
  const arg = (a: Record<string, unknown>): unknown => rule({ args: [{ index: 0, op: 'SCMP_CMP_EQ', value: 1, ...a }] });
  const cases: Array<[string, unknown]> = [
    ['no profile', undefined],
    ['a number', 5],
    ['an array', []],
    ['no default action', {}],
    ['unknown default action', { defaultAction: 'SCMP_ACT_MAYBE' }],
    ['notify', { defaultAction: 'SCMP_ACT_NOTIFY' }],
    ['action not a string', { defaultAction: 1 }],
    ['errno too big', { defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 65536 }],
    ['errno negative', rule({ errnoRet: -1 })],
    ['errno fractional', rule({ errnoRet: 1.5 })],
    ['architectures not an array', { defaultAction: 'SCMP_ACT_ALLOW', architectures: 'SCMP_ARCH_X86' }],
    ['unknown arch', { defaultAction: 'SCMP_ACT_ALLOW', architectures: ['x86_64'] }],
    ['unknown flag', { defaultAction: 'SCMP_ACT_ALLOW', flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] }],
    ['syscalls not an array', { defaultAction: 'SCMP_ACT_ALLOW', syscalls: {} }],
    ['rule not an object', { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [null] }],
    ['names missing', rule({ names: undefined })],
    ['names empty', rule({ names: [] })],
    ['name empty', rule({ names: [''] })],
    ['name not a string', rule({ names: [42] })],
    ['name with NUL', rule({ names: ['mk\0dir'] })],
    ['name too long', rule({ names: ['x'.repeat(257)] })],
    ['too many names', rule({ names: new Array(16385).fill('mkdir') })],
    ['rule action missing', rule({ action: undefined })],
    ['args not an array', rule({ args: 'x' })],
    ['seven args', rule({ args: new Array(7).fill({ index: 0, op: 'SCMP_CMP_EQ', value: 1 }) })],
    ['index 6', arg({ index: 6 })],
    ['index missing', arg({ index: undefined })],
    ['unknown op', arg({ op: 'SCMP_CMP_LIKE' })],
    ['value negative', arg({ value: -1 })],
    ['value unsafe', arg({ value: 2 ** 60 })],
    ['value a string', arg({ value: '1' })],
    ['value a negative bigint', arg({ value: -1n })],
    ['value a bigint ≥ 2^64', arg({ value: 2n ** 64n })],
    ['valueTwo bad', arg({ op: 'SCMP_CMP_MASKED_EQ', valueTwo: 'x' })],
  ];
  for (const [name, profile] of cases) {
    try {
      compile(profile);
      t.fail(`${name}: expected a TypeError`);
    } catch (err) {
      t.type(err, TypeError, `${name}: ${(err as Error).message}`);
    }
  }
  t.doesNotThrow(() => compile(arg({ value: 2n ** 64n - 1n, op: 'SCMP_CMP_MASKED_EQ', valueTwo: 2n ** 63n })), 'a full 64-bit mask and datum as bigints');
});

t.test('libseccomp refusals are errno errors (an OCI architecture this libseccomp lacks)', async (t) => {
  try {
    native.seccompCompile({ defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_SHEB'] });
    t.pass('this libseccomp knows SuperH');
  } catch (err) {
    t.match(err, { code: 'EOPNOTSUPP', syscall: 'seccomp_arch_add' }, (err as Error).message);
    t.notOk(err instanceof TypeError, 'not a TypeError');
  }
});

t.test('helper compileSeccomp: status codes, size limit', async (t) => {
  const valid = validateSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', architectures: [], flags: ['SECCOMP_FILTER_FLAG_TSYNC'], syscalls: [{ names: ['mkdir', 'bogus_xyz'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, valueTwo: 0, op: 'SCMP_CMP_NE' }] }] });
  if (!valid) throw new Error('no profile');
  const c = compileSeccomp(native, valid);
  t.ok(c.bpf.length > 0);
  t.equal(c.flags, 1);
  t.same(c.skipped, ['bogus_xyz']);

  const stub = (f: () => ReturnType<NativeAddon['seccompCompile']>): Pick<NativeAddon, 'seccompCompile'> => ({ seccompCompile: (_p: SeccompProfile) => f() });
  const status = (fn: () => unknown): StatusError => {
    try {
      fn();
    } catch (err) {
      if (err instanceof StatusError) return err;
      throw err;
    }
    throw new Error('expected a StatusError');
  };
  const big = status(() => compileSeccomp(stub(() => ({ bpf: Buffer.alloc((BPF_MAXINSNS + 1) * 8), flags: 0, skipped: [] })), valid));
  t.equal(big.code, Code.INVALID_ARGUMENT);
  t.match(big.message, /4097 BPF instructions, more than the kernel's 4096/);
  const odd = status(() => compileSeccomp(stub(() => ({ bpf: Buffer.alloc(9), flags: 0, skipped: [] })), valid));
  t.equal(odd.code, Code.INTERNAL);
  const refused = status(() =>
    compileSeccomp(
      stub(() => {
        throw Object.assign(new Error('seccomp_attr_set: Operation not supported (SECCOMP_FILTER_FLAG_LOG)'), { code: 'EOPNOTSUPP' });
      }),
      valid,
    ),
  );
  t.equal(refused.code, Code.INVALID_ARGUMENT);
  t.match(refused.message, /seccomp profile cannot be compiled: seccomp_attr_set/);
  const bug = status(() =>
    compileSeccomp(
      stub(() => {
        throw new TypeError('seccompCompile: profile.defaultAction must be a string');
      }),
      valid,
    ),
  );
  t.equal(bug.code, Code.INTERNAL, 'a TypeError after validation is a helper bug');
});
