/**
 * kata-agent-ctl: low-level test client of the Kata agent, in the spirit of upstream
 * agent-ctl (src/tools/agent-ctl, kata-containers 6e4d4c329a).
 *
 *   kata-agent-ctl [-l LEVEL] connect --server-address ADDR [--bundle-dir DIR]
 *                  [-c|--cmd "Command args"]... [--timeout TIME] [-n|--no-auto-values]
 *                  [--ignore-errors] [-i|--interactive] [--clear-hostname]
 *                  [--hybrid-vsock [--hybrid-vsock-port N]]
 *   kata-agent-ctl exec [-i] [-t] --server-address ADDR ... CID CMD [ARG...]   (control/ctl/attach.ts)
 *   kata-agent-ctl run [-i] [-t] --server-address ADDR --bundle-dir DIR [--cid ID] [CMD...]
 *   kata-agent-ctl generate-cid | generate-sid | examples | help
 *
 * Output: each API response as one line `<Method>: <JSON>` on stdout (control/ctl/output.ts); errors on
 * stderr as `<CODE_NAME>: <message>` for a status from the agent or the transport, or
 * `ERROR: <command>: <message>` for a command that could not be built. Exit status: 0 when all
 * commands succeeded (or --ignore-errors), 1 when a command failed, 2 for a usage error.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { humanTimeToNs, parseInteger, randomId } from './args';
import { parseTerminalCommand, runTerminalCommand, TerminalUsageError, type AttachIo } from './attach';
import { ociMain } from './oci';
import { resolveMethodName } from './methods';
import { CtlSession, isBuiltinName } from './session';

const PROGRAM = 'kata-agent-ctl';

/** Log levels accepted by -l (upstream slog names); critical maps to pino's fatal. */
const LOG_LEVELS: Readonly<Record<string, string>> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  critical: 'fatal',
};

const WARNING_TEXT = `WARNING:
    This tool is for advanced users familiar with the low-level agent API calls, and is
    meant for test and development systems only: it can make arbitrary API calls, so it
    can easily confuse other parts of the system or kill a running container or sandbox.`;

function usageText(): string {
  return `${PROGRAM}: low-level test client of the Kata Containers agent (ttRPC API calls).

USAGE:
    ${PROGRAM} [-l|--log-level LEVEL] <SUBCOMMAND> [OPTIONS]

GLOBAL OPTIONS:
    -l, --log-level LEVEL   trace|debug|info|warn|error|critical (default info; logs go to stderr)
    -h, --help              Show this help
    -V, --version           Show the version

SUBCOMMANDS:
    connect       Connect to the agent and run commands
    exec          Run a command in a container, attached to this terminal:
                    exec [-i] [-t] --server-address ADDR [--bundle-dir DIR] [-u UID[:GID]]
                         [-w DIR] [-e K=V]... CID [--] CMD [ARG...]
                  (-it: an interactive shell; the exit status is the command's)
    run           Create and start a container from a bundle, attached; removed at its end:
                    run [-i] [-t] --server-address ADDR --bundle-dir DIR [--cid ID] [--] [CMD...]
                  (connect -c 'CreateSandbox hostname=H' first for the sandbox's hostname and
                  shared uts/ipc namespaces; without it the container gets its own)
    oci           The OCI runtime command-line interface (create, start, state, kill, delete,
                  run, exec, ps; runc-style) over the agent: oci --help; bin/kata-agent-oci
    generate-cid  Print a random container ID (64 hex characters)
    generate-sid  Print a random sandbox ID (64 hex characters)
    examples      Show usage examples
    help          Show this help

CONNECT OPTIONS:
    --server-address URI    unix:///path, unix://@abstract-name or vsock://<cid>:<port> (required)
    --bundle-dir DIR        OCI bundle; DIR/config.json is the spec CreateContainer and
                            ExecProcess send (unless spec=file://... or json:// say otherwise)
    -c, --cmd "CMD ARGS"    Command to run; repeatable, run in order
    -i, --interactive       Read commands from stdin (prompt on stderr)
    -n, --no-auto-values    Do not generate ids, spec or defaults; send what the command says
    --ignore-errors         Go on after a failed command and exit 0
    --timeout TIME          Deadline per call: ns or 99ns, 30us, 2ms, 5s, 7m (default 0 = none)
    --clear-hostname        Send the spec's hostname as "" (upstream agent-ctl does this)
    --hybrid-vsock          The unix:// address is a hybrid vsock socket (Cloud Hypervisor, Firecracker)
    --hybrid-vsock-port N   Agent vsock port for --hybrid-vsock (default 1024)

COMMANDS (-c):
    Built-ins (lower case): echo TEXT, help, list, repeat N (-1 = forever; applies to the
    next command), sleep TIME, quit.
    API commands: the rpc name (CreateContainer, WaitProcess, Check, Version, ...; 'list'
    shows them all), followed by any of:
      json://{...}            the request (partial or complete), proto field names
      file:///path.json       the same, from a file
      key=value               cid, sid, exec_id (defaults to cid), signal (SIGKILL, KILL,
                              kill, 9; default SIGKILL), row, column, len, timeout, data
                              (text, or hex:0a0b...), path, file_size, file_mode, dir_mode,
                              uid, gid, offset, wait, nb_cpus, cpu_only, sec, usec,
                              memHotplugProbeAddr (hex list), spec=file:///config.json,
                              or any scalar field of the request by its proto name
    Values are remembered for the following commands of the run.

OUTPUT:
    One line per response on stdout, labelled with its command: "Check: {...}" (JSON with
    all fields, enums by name; bytes as UTF-8 text, or "base64:..." when not valid UTF-8). Errors on stderr as "CODE_NAME: message".
    Exit status 0 = all commands succeeded, 1 = a command failed, 2 = usage error.

${WARNING_TEXT}`;
}

/** The text of `kata-agent-ctl examples` (each command in it builds: test/unit/ctl.test.ts). */
export function examplesText(): string {
  const p = PROGRAM;
  const vsock = 'vsock://3:1024';
  return `EXAMPLES:

- Check that the agent is running:
  $ ${p} connect --server-address "${vsock}" --cmd Check

- Connect through a hybrid vsock socket (here Cloud Hypervisor):
  $ ${p} connect --server-address "unix:///run/vc/vm/foo/clh.sock" --hybrid-vsock --cmd Check

- Connect to a local agent:
  $ ${p} connect --server-address "unix:///tmp/local.socket" --cmd Check
  $ ${p} connect --server-address "unix://@/foo/bar/abstract.socket" --cmd Check

- Query the guest, with the full request given as JSON:
  $ ${p} connect --server-address "${vsock}" -c 'GetGuestDetails json://{"mem_block_size": true, "mem_hotplug_probe": true}'

- The same request from a file:
  $ echo '{"mem_block_size": true}' > /tmp/api.json
  $ ${p} connect --server-address "${vsock}" -c 'GetGuestDetails file:///tmp/api.json'

- List all commands:
  $ ${p} connect --server-address "${vsock}" --cmd list

- Network: configure an interface (found by MAC), its routes and a neighbour; list; iptables:
  $ ${p} connect --server-address "${vsock}" -c 'UpdateInterface json://{"interface": {"name": "eth0", "hwAddr": "02:42:ac:11:00:02", "mtu": 1450, "IPAddresses": [{"family": "v4", "address": "172.17.0.2", "mask": "16"}]}}'
  $ ${p} connect --server-address "${vsock}" -c 'UpdateRoutes json://{"routes": {"Routes": [{"dest": "172.17.0.0/16", "device": "eth0", "source": "172.17.0.2", "scope": 253}, {"gateway": "172.17.0.1", "device": "eth0"}]}}'
  $ ${p} connect --server-address "${vsock}" -c 'AddARPNeighbors json://{"neighbors": {"ARPNeighbors": [{"toIPAddress": {"address": "172.17.0.1"}, "device": "eth0", "lladdr": "02:42:7f:00:00:01"}]}}'
  $ ${p} connect --server-address "${vsock}" -c ListInterfaces -c ListRoutes
  $ ${p} connect --server-address "${vsock}" -c 'GetIPTables is_ipv6=false'
  $ ${p} connect --server-address "${vsock}" -c 'SetIPTables json://{"is_ipv6": false, "data": "KmZpbHRlcgpDT01NSVQK"}'

- Query guest details forever:
  $ ${p} connect --server-address "${vsock}" -c 'repeat -1' -c GetGuestDetails

- Guest operations by name with key=value arguments:
  $ ${p} connect --server-address "${vsock}" -c 'OnlineCPUMem nb_cpus=4 cpu_only=false'
  $ ${p} connect --server-address "${vsock}" -c 'MemHotplugByProbe memHotplugProbeAddr=0x1c0000000,0x1c8000000'
  $ ${p} connect --server-address "${vsock}" -c 'ReseedRandomDev data=hex:0123456789abcdef'
  $ ${p} connect --server-address "${vsock}" -c "SetGuestDateTime sec=$(date +%s) usec=0"
  $ ${p} connect --server-address "${vsock}" -c 'AddSwap pci_path=02/03'
  $ ${p} connect --server-address "${vsock}" -c 'GetVolumeStats volume=/run/kata-containers/shared/direct-volumes/v1'
  $ ${p} connect --server-address "${vsock}" -c 'ResizeVolume volume=/run/kata-containers/sandbox/storage/v1 size=2147483648'
  $ ${p} connect --server-address "${vsock}" \\
      -c 'CopyFile path=/run/kata-containers/shared/containers/c1/hosts file_size=5 file_mode=0o100644 data=hello'
  $ ${p} connect --server-address "${vsock}" -c 'CopyFile path=/run/kata-containers/shared/containers/c1/d file_mode=0o40755'
  $ echo '{"default": "allow", "rpcs": {"CopyFile": "deny"}}' > /tmp/policy.json
  $ ${p} connect --server-address "${vsock}" -c 'SetPolicy policy_file=file:///tmp/policy.json'

- Send SIGUSR1 to a container's init process:
  $ ${p} connect --server-address "${vsock}" --cmd "SignalProcess signal=usr1 cid=$container_id"

- Run a container from a bundle and wait for it (ids are remembered between commands):
  $ ${p} connect --server-address "${vsock}" --bundle-dir "$bundle_dir" \\
      -c CreateSandbox -c 'CreateContainer cid=c1' -c StartContainer -c WaitProcess \\
      -c 'ReadStdout len=4096' -c RemoveContainer -c DestroySandbox

- Create a container from a custom config file:
  $ ${p} connect --server-address "${vsock}" --cmd "CreateContainer spec=file://$bundle_dir/config.json"

- An interactive shell in a running container (a terminal, raw mode, resized with yours):
  $ ${p} exec -it --server-address "${vsock}" "$container_id" sh

- Run a container from a bundle with a terminal, attached, removed when it ends:
  $ ${p} connect --server-address "${vsock}" -c 'CreateSandbox hostname=box'
  $ ${p} run -it --server-address "${vsock}" --bundle-dir "$bundle_dir" -- sh

- Generate ids:
  $ ${p} generate-cid
  $ ${p} generate-sid`;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * For a subcommand that is really a `connect -c` command (a built-in such as `list`, or an rpc
 * name such as `Check`): the text pointing there ("; "list" is a command of connect: ..."),
 * else "".
 */
function connectCommandHint(sub: string): string {
  if (!isBuiltinName(sub) && !resolveMethodName(sub)) return '';
  return `; ${JSON.stringify(sub)} is a command of connect: ${PROGRAM} connect --server-address ADDR -c ${sub}`;
}

/** A usage error: printed with a hint, exit status 2. */
class UsageError extends Error {}

/** Where main writes; replaceable for tests. */
export interface MainIo {
  stdout(line: string): void;
  stderr(line: string): void;
  stdin: NodeJS.ReadableStream;
  /** Prompt sink for --interactive. */
  prompt?: NodeJS.WritableStream;
  /** The terminal of exec/run (default: this process's stdio). */
  attach?: AttachIo;
}

function defaultIo(): MainIo {
  // A closed stdout (e.g. `| head`) ends the program quietly instead of with an EPIPE trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw err;
  });
  return {
    stdout: (line) => process.stdout.write(`${line}\n`),
    stderr: (line) => process.stderr.write(`${line}\n`),
    stdin: process.stdin,
    prompt: process.stderr,
  };
}

async function connectCommand(argv: string[], logLevel: string, io: MainIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        'server-address': { type: 'string' },
        'bundle-dir': { type: 'string' },
        cmd: { type: 'string', short: 'c', multiple: true },
        timeout: { type: 'string' },
        'no-auto-values': { type: 'boolean', short: 'n' },
        'ignore-errors': { type: 'boolean' },
        interactive: { type: 'boolean', short: 'i' },
        'clear-hostname': { type: 'boolean' },
        'hybrid-vsock': { type: 'boolean' },
        'hybrid-vsock-port': { type: 'string' },
        'log-level': { type: 'string', short: 'l' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    io.stdout(usageText());
    return 0;
  }
  if (v['log-level'] !== undefined) logLevel = checkLogLevel(v['log-level']);
  const address = v['server-address'];
  if (address === undefined || address === '') throw new UsageError('connect needs --server-address URI');
  const commands = v.cmd ?? [];
  if (!v.interactive && commands.length === 0) throw new UsageError('connect needs commands to send (-c "Command args") or --interactive');
  let timeoutNs = 0;
  if (v.timeout !== undefined) {
    try {
      timeoutNs = v.timeout === '0' ? 0 : humanTimeToNs(v.timeout);
    } catch (err) {
      throw new UsageError(`--timeout: ${(err as Error).message}`);
    }
  }
  let hybridVsockPort: number | undefined;
  if (v['hybrid-vsock']) {
    try {
      hybridVsockPort = parseInteger(v['hybrid-vsock-port'] ?? '1024', 'hybrid vsock port', 0, 0xffffffff);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  } else if (v['hybrid-vsock-port'] !== undefined) {
    throw new UsageError('--hybrid-vsock-port needs --hybrid-vsock');
  }

  const logger: Logger = pino({ name: PROGRAM, level: LOG_LEVELS[logLevel] }, pino.destination({ fd: 2, sync: true }));
  const session = new CtlSession({
    serverAddress: address,
    bundleDir: v['bundle-dir'] ?? '',
    timeoutNs,
    autoValues: !v['no-auto-values'],
    ignoreErrors: v['ignore-errors'] ?? false,
    clearHostname: v['clear-hostname'] ?? false,
    ...(hybridVsockPort !== undefined ? { hybridVsockPort } : {}),
    stdout: io.stdout,
    stderr: io.stderr,
    logger,
  });
  logger.debug({ address, bundleDir: v['bundle-dir'], timeoutNs, autoValues: !v['no-auto-values'] }, 'client set up');
  try {
    if (v.interactive) {
      const status = await session.runAll(commands);
      if (status !== 0) return status;
      return await session.runInteractive(io.stdin, io.prompt);
    }
    return await session.runAll(commands);
  } finally {
    await session.close();
  }
}

function checkLogLevel(level: string): string {
  if (!(level in LOG_LEVELS)) throw new UsageError(`invalid log level ${JSON.stringify(level)} (want ${Object.keys(LOG_LEVELS).join(', ')})`);
  return level;
}

/**
 * Run kata-agent-ctl with `argv` (without node and the script path). Resolves with the exit
 * status (0 ok, 1 a command failed, 2 usage error); never rejects for bad input.
 */
export async function main(argv: readonly string[], io: MainIo = defaultIo()): Promise<number> {
  try {
    let logLevel = 'info';
    let i = 0;
    for (; i < argv.length; i++) {
      const a = argv[i];
      if (a === '-l' || a === '--log-level') {
        if (i + 1 >= argv.length) throw new UsageError(`${a} needs a level`);
        logLevel = checkLogLevel(argv[++i]);
      } else if (a.startsWith('--log-level=')) {
        logLevel = checkLogLevel(a.slice('--log-level='.length));
      } else if (a === '-h' || a === '--help') {
        io.stdout(usageText());
        return 0;
      } else if (a === '-V' || a === '--version') {
        io.stdout(`${PROGRAM} ${packageVersion()}`);
        return 0;
      } else if (a.startsWith('-')) {
        throw new UsageError(`unknown option ${JSON.stringify(a)}`);
      } else {
        break;
      }
    }
    const sub = argv[i];
    const rest = argv.slice(i + 1);
    switch (sub) {
      case undefined:
        throw new UsageError('need a subcommand (connect, exec, run, oci, generate-cid, generate-sid, examples)');
      case 'connect':
        return await connectCommand([...rest], logLevel, io);
      case 'generate-cid':
      case 'generate-sid':
        io.stdout(randomId());
        return 0;
      case 'exec':
      case 'run':
        return await runTerminalCommand(parseTerminalCommand(sub, rest), io.attach ?? { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      case 'oci':
        return await ociMain(rest, {
          stdout: (text) => io.stdout(text.replace(/\n$/, '')),
          stderr: (text) => io.stderr(text.replace(/\n$/, '')),
          ...(io.attach ? { attach: io.attach } : {}),
        });
      case 'examples':
        io.stdout(examplesText());
        return 0;
      case 'help':
        io.stdout(usageText());
        return 0;
      default:
        throw new UsageError(`invalid subcommand ${JSON.stringify(sub)}${connectCommandHint(sub)}`);
    }
  } catch (err) {
    if (err instanceof UsageError || err instanceof TerminalUsageError) {
      io.stderr(`ERROR: ${err.message.replace(/\n/g, '; ')} (${PROGRAM} --help shows the usage)`);
      return 2;
    }
    io.stderr(`ERROR: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((status) => {
    process.exitCode = status;
  });
}
