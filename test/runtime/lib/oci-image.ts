// A one-layer OCI image-layout tarball (for `ctr image import`) from a directory: the layer is
// `tar` of the directory (owner 0, mtime 0), config/manifest/index are written here, the image
// name is the io.containerd.image.name annotation (as the lane's mk-busybox-oci.py does).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from './lane';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  [k: string]: unknown;
}

/**
 * Build `<work>/image.tar` holding image `name` whose only layer is the tree `rootfs` and whose
 * config runs `cmd`. Returns the tarball's path; rejects if `tar` fails.
 */
export async function buildOciImage(work: string, rootfs: string, name: string, cmd: string[]): Promise<string> {
  const layout = path.join(work, 'layout');
  const blobsDir = path.join(layout, 'blobs', 'sha256');
  fs.mkdirSync(blobsDir, { recursive: true });
  const layerTar = path.join(work, 'layer.tar');
  const t = await run('tar', ['-C', rootfs, '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', layerTar, '.']);
  if (t.status !== 0) throw new Error(`tar layer: ${t.stderr}`);
  const blob = (data: Buffer, mediaType: string): Descriptor => {
    const hex = createHash('sha256').update(data).digest('hex');
    fs.writeFileSync(path.join(blobsDir, hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layer = blob(fs.readFileSync(layerTar), 'application/vnd.oci.image.layer.v1.tar');
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: cmd },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
    ),
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = blob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] })),
    'application/vnd.oci.image.manifest.v1+json',
  );
  manifest.platform = { architecture: 'amd64', os: 'linux' };
  manifest.annotations = { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').pop() };
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(
    path.join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [manifest] }),
  );
  const out = path.join(work, 'image.tar');
  const o = await run('tar', ['-C', layout, '-cf', out, 'oci-layout', 'index.json', 'blobs']);
  if (o.status !== 0) throw new Error(`tar image: ${o.stderr}`);
  return out;
}
