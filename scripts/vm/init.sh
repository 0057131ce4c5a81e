#!/bin/sh
# /init of the VM lane's initramfs (scripts/vm/make-initramfs). Loads the modules, mounts the
# host's root read-only over 9p (mount tag "hostroot") and switch_roots into it, exec'ing
# Node on the agent as PID 1: the agent's init mode (control/init.ts) does the rest.
# The kernel hands unknown `KEY=VALUE` command-line words to /init as environment:
#   KATA_AGENT_ROOT  the project directory on the host (must hold dist/ and node_modules/)
#   KATA_NODE        the node binary on the host (default /usr/bin/node)
#   KATA_AGENT_ARGS  extra agent arguments, ',' for spaces
export PATH=/bin
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m" || echo "init: insmod $m failed"; done < /modules.list
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /newroot; then
  echo "init: cannot mount the host root (9p tag hostroot)"; sleep 1; exec sh
fi
umount /dev
node=${KATA_NODE:-/usr/bin/node}
args=$(echo "${KATA_AGENT_ARGS:-}" | sed 's/,/ /g' 2>/dev/null || echo "")
exec switch_root /newroot "$node" "$KATA_AGENT_ROOT/bin/kata-agent" --server-address serial://agent.channel.0 $args
