// `npm start` (scripts/demo.ts): the container runs and prints its greeting, and the demo's run
// directory under /tmp (sockets, state, logs) is removed after a clean run (a new-user review
// found /tmp/kata-agent-* directories piling up).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROJECT_ROOT } from '../../scripts/lib/standalone';
import { skipReason } from './lib/agent-harness';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.test('npm start runs the container and leaves no run directory behind', async (t) => {
    const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'scripts', 'demo.js')], {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      timeout: 180_000,
      env: { ...process.env, KATA_DEMO_KEEP: '' },
    });
    t.equal(r.status, 0, `demo exit 0; stderr: ${r.stderr}`);
    t.match(r.stdout, /Hello from a Kata container/);
    const m = /removed (\/\S+) \(KATA_DEMO_KEEP=1/.exec(r.stdout);
    t.ok(m, 'says which run directory it removed');
    if (m) t.notOk(fs.existsSync(m[1]), `${m[1]} is gone`);
  });
}
