// control/config-upstream.ts and its place in control/config.ts: the kernel command line's
// agent.* options, the TOML file, the environment, in upstream's precedence (config.rs).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, type AgentConfig } from '../../control/config';
import { loadUpstreamOptions, parseUpstreamToml, upstreamDefaults } from '../../control/config-upstream';
import { controlArgsFor } from '../../control/standalone';
import { helperConfigArgs } from '../../control/init';
import { silentLogger } from '../../shared/log';
import { Code } from '../../shared/protocol';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'config-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cfg(cmdline: string, env: NodeJS.ProcessEnv = {}, argv: string[] = []): AgentConfig & { warnings: string[] } {
  const loaded = loadConfig(argv, env, { cmdline });
  if (loaded.help) throw new Error('help');
  return { ...loaded.config, warnings: loaded.warnings };
}

t.test('kernel command line: every option parsed (upstream test_from_cmdline cases)', async (t) => {
  t.match(cfg('quiet console=hvc0 root=/dev/pmem0p1'), { ...upstreamDefaults(), warnings: [] }, 'no agent.* words: defaults');
  t.match(
    cfg(
      'agent.debug_console agent.devmode agent.trace agent.log=debug agent.server_addr=vsock://-1:2048 ' +
        'agent.hotplug_timeout=7 agent.debug_console_vport=1026 agent.log_vport=1025 agent.container_pipe_size=65536 ' +
        'agent.unified_cgroup_hierarchy=true agent.passfd_listener_port=1027',
    ),
    {
      debugConsole: true, devMode: true, tracing: true, logLevel: 'debug', serverAddr: 'vsock://-1:2048', hotplugTimeoutMs: 7000,
      debugConsoleVport: 1026, logVport: 1025, containerPipeSize: 65536, unifiedCgroupHierarchy: true, passfdListenerPort: 1027,
    },
  );
  t.equal(cfg('agent.debug_consolex agent.devmode').debugConsole, false, 'a flag matches only exactly');
  t.equal(cfg('agent.log=warning').logLevel, 'warn', 'logrus name');
  t.equal(cfg('agent.log=critical').logLevel, 'fatal');
  t.equal(cfg('agent.log=debug agent.log=error').logLevel, 'error', 'the last occurrence wins');
  t.equal(cfg('agent.server_addr=unix:///a=b').serverAddr, 'unix:///a=b', 'the value may contain "="');
  t.equal(cfg('agent.hotplug_timeout=0').hotplugTimeoutMs, 3000, 'hotplug_timeout 0 is ignored');
  t.equal(cfg('agent.debug_console_vport=-1 agent.log_vport=0').debugConsoleVport, 0, 'a port <= 0 is ignored');
  t.equal(cfg('agent.container_pipe_size=0').containerPipeSize, 0);
  t.equal(cfg('agent.trace=1').tracing, true, 'bool as integer');
  t.equal(cfg('agent.trace=0').tracing, false);
  t.equal(cfg('agent.trace=yes').tracing, false, 'not a bool nor an integer: false, as upstream');
  t.equal(cfg('agent.unified_cgroup_hierarchy=2').unifiedCgroupHierarchy, true);
  const w = cfg('agent.debug_console=1 agent.frobnicate=3 agent.log=info');
  t.equal(w.debugConsole, false, 'agent.debug_console=1 is not the flag');
  t.same(w.warnings, ['unknown kernel command-line option "agent.debug_console=1" ignored', 'unknown kernel command-line option "agent.frobnicate=3" ignored']);
});

t.test('kernel command line: a bad value is an error naming option and value', async (t) => {
  const bad: [string, RegExp][] = [
    ['agent.log=foo', /agent\.log "foo" on the kernel command line/],
    ['agent.log=DEBUG', /agent\.log "DEBUG"/],
    ['agent.log=debug=1', /agent\.log "debug=1"/],
    ['agent.hotplug_timeout=3s', /agent\.hotplug_timeout "3s"/],
    ['agent.hotplug_timeout=-1', /agent\.hotplug_timeout "-1"/],
    ['agent.hotplug_timeout=100000', /agent\.hotplug_timeout "100000"/],
    ['agent.container_pipe_size=-1', /agent\.container_pipe_size "-1"/],
    ['agent.container_pipe_size=4294967296', /agent\.container_pipe_size "4294967296"/],
    ['agent.debug_console_vport=x', /agent\.debug_console_vport "x"/],
    ['agent.log_vport=', /agent\.log_vport ""/],
    ['agent.passfd_listener_port=1.5', /agent\.passfd_listener_port "1\.5"/],
    ['agent.server_addr=', /agent\.server_addr ""/],
    ['agent.config_file=', /agent\.config_file ""/],
  ];
  for (const [line, message] of bad) t.throws(() => cfg(line), { code: Code.INVALID_ARGUMENT, message }, line);
});

t.test('environment: upstream variables after the command line; ours and flags after that', async (t) => {
  const c = cfg('agent.server_addr=vsock://-1:2048 agent.log=debug', { KATA_AGENT_SERVER_ADDR: 'unix:///tmp/e.sock', KATA_AGENT_LOG_LEVEL: 'error', KATA_AGENT_TRACING: 'true' });
  t.match(c, { serverAddr: 'unix:///tmp/e.sock', logLevel: 'error', tracing: true }, 'env beats the command line');
  const ignored = cfg('agent.log=debug', { KATA_AGENT_LOG_LEVEL: 'loud' });
  t.equal(ignored.logLevel, 'debug', 'an invalid KATA_AGENT_LOG_LEVEL is ignored, as upstream');
  t.match(ignored.warnings, [/KATA_AGENT_LOG_LEVEL "loud" ignored/]);
  t.equal(cfg('', { KATA_AGENT_TRACING: '0' }).tracing, false);
  t.equal(cfg('agent.log=debug', { KATA_AGENT_LOG_LEVEL: 'error' }, ['--log-level', 'trace']).logLevel, 'trace', 'a flag beats everything');
  t.equal(cfg('agent.server_addr=vsock://-1:2048', {}, ['--server-address', 'unix:///tmp/f.sock']).serverAddr, 'unix:///tmp/f.sock');
});

t.test('TOML file: keys, types, precedence over the command line and environment', async (t) => {
  const file = path.join(tmp, 'agent.toml');
  fs.writeFileSync(
    file,
    [
      'debug_console = true', 'dev_mode = true', 'log_level = "warning"', 'debug_console_vport = 1026', 'log_vport = 1025',
      'container_pipe_size = 4096', 'server_addr = "unix:///tmp/toml.sock"', 'passfd_listener_port = 1027',
      'unified_cgroup_hierarchy = true', 'tracing = true', 'hotplug_timeout = { secs = 5, nanos = 500000000 }',
      'some_future_key = 1', '[endpoints]', 'allowed = ["CreateContainerRequest"]',
    ].join('\n'),
  );
  const env = { KATA_AGENT_SERVER_ADDR: 'unix:///tmp/env.sock', KATA_AGENT_LOG_LEVEL: 'debug' };
  const expected = {
    debugConsole: true, devMode: true, logLevel: 'warn', debugConsoleVport: 1026, logVport: 1025, containerPipeSize: 4096,
    serverAddr: 'unix:///tmp/toml.sock', passfdListenerPort: 1027, unifiedCgroupHierarchy: true, tracing: true, hotplugTimeoutMs: 5500,
    configFile: file,
  };
  const viaCmdline = cfg(`agent.log=trace agent.config_file=${file} agent.hotplug_timeout=9`, env);
  t.match(viaCmdline, expected, 'agent.config_file=: the file only; the rest of the command line and the upstream env are ignored');
  t.match(viaCmdline.warnings, [/"some_future_key"/, /"endpoints"/], 'unknown keys are warned about');
  t.match(cfg('agent.log=trace', env, ['--config', file]), expected, '--config: the file only');
  t.match(cfg('', env, ['-c', file, '--log-level', 'error']), { logLevel: 'error' }, 'a flag still beats the file');

  const minimal = parseUpstreamToml('hotplug_timeout = 4\n', 'x.toml', []);
  t.same(minimal, { ...upstreamDefaults(), hotplugTimeoutMs: 4000 }, 'absent keys keep the defaults; integer seconds accepted');
  const badToml: [string, RegExp][] = [
    ['debug_console = "yes"', /debug_console "yes" in x\.toml \(want true or false\)/],
    ['log_level = "loud"', /log_level "loud" in x\.toml/],
    ['container_pipe_size = -5', /container_pipe_size -5 in x\.toml/],
    ['log_vport = 1.5', /log_vport 1\.5/],
    ['server_addr = 5', /server_addr 5/],
    ['hotplug_timeout = { secs = "3" }', /hotplug_timeout \{"secs":"3"\}/],
    ['this is not toml', /cannot parse config file x\.toml/],
  ];
  for (const [text, message] of badToml) t.throws(() => parseUpstreamToml(text, 'x.toml', []), { code: Code.INVALID_ARGUMENT, message }, text);
  t.throws(() => loadUpstreamOptions('', {}, path.join(tmp, 'missing.toml')), { code: Code.INVALID_ARGUMENT, message: /cannot read config file .*missing\.toml/ });
});

t.test('--standalone and --run-dir', async (t) => {
  const l = loadConfig(['--standalone', '--run-dir', '/tmp/sa', '--log-level', 'debug'], {}, { cmdline: '' });
  t.match(l, { help: false, standalone: { runDir: '/tmp/sa' }, config: { logLevel: 'debug' } });
  t.throws(() => loadConfig(['--run-dir', '/tmp/sa'], {}, { cmdline: '' }), { code: Code.INVALID_ARGUMENT, message: /--run-dir needs --standalone/ });
  t.same(controlArgsFor(['--standalone', '--run-dir', '/x', '-c', 'f.toml', '--run-dir=/y', '--log-level', 'debug']), ['-c', 'f.toml', '--log-level', 'debug']);
});

t.test('init mode gives the helper the configured hotplug timeout (it does the device waits)', async (t) => {
  const good = path.join(tmp, 'init-hotplug.toml');
  fs.writeFileSync(good, 'hotplug_timeout = 7\n');
  t.same(helperConfigArgs(['--config', good], {}, silentLogger()), ['--hotplug-timeout-ms', '7000'], 'from the configuration');
  const bad = path.join(tmp, 'init-bad.toml');
  fs.writeFileSync(bad, 'hotplug_timeout = "soon"\n');
  t.same(helperConfigArgs(['--config', bad], {}, silentLogger()), [], 'a configuration that does not load: the helper keeps its default');
});
