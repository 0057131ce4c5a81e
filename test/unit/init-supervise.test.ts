// Init mode's supervision policy (control/init.ts controlExitAction): which control-plane exits
// make PID 1 start a new control plane (it adopts the helper's containers) and which power the
// guest off.
import t from 'tap';
import { CONTROL_RESTART_BURST, CONTROL_RESTART_WINDOW_MS, controlExitAction } from '../../control/init';

t.test('a clean exit (DestroySandbox, SIGTERM) and a configuration error power off', async (t) => {
  t.equal(controlExitAction('exit 0', [], 1000), 'stop');
  t.equal(controlExitAction('exit 2', [], 1000), 'stop', 'exit 2: a configuration the next one could not use either');
});

t.test('a killed, crashed or failing control plane is restarted', async (t) => {
  for (const how of ['signal SIGKILL', 'signal SIGSEGV', 'signal SIGABRT', 'exit 1', 'exit 134']) {
    t.equal(controlExitAction(how, [], 1000), 'restart', how);
  }
});

t.test(`at most ${CONTROL_RESTART_BURST} restarts in a window; older ones are forgotten`, async (t) => {
  const now = 10 * CONTROL_RESTART_WINDOW_MS;
  const recent = Array.from({ length: CONTROL_RESTART_BURST }, (_, i) => now - 1000 * (CONTROL_RESTART_BURST - i));
  t.equal(controlExitAction('signal SIGKILL', [...recent], now), 'stop', 'the burst is used up: power off');
  t.equal(controlExitAction('signal SIGKILL', recent.slice(1), now), 'restart', 'one short of the burst');
  const old = recent.map((x) => x - CONTROL_RESTART_WINDOW_MS);
  t.equal(controlExitAction('signal SIGKILL', old, now), 'restart', 'restarts older than the window do not count');
  t.same(old, [], 'pruned');
});
