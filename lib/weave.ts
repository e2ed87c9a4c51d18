/**
 * Weave Net's peer name, which is also the MAC of its `weave` bridge (weave v2.8.1,
 * net/uuid.go and net/mac.go): sha256 over the salt "9oBJ0Jmip-", then the raw bytes of
 * /etc/machine-id (else /var/lib/dbus/machine-id), then the raw bytes of
 * /sys/class/dmi/id/product_uuid (else /sys/hypervisor/uuid), untrimmed; first 6 bytes,
 * multicast bit cleared, locally-administered bit set. Nodes cloned from one image share
 * the machine-id, so they share this MAC: seed 000's "peer names collision".
 * Weave reuses an existing bridge's MAC instead of recomputing, so a new machine-id
 * takes effect only once the bridge is recreated, which a reboot does.
 */
import { createHash } from 'node:crypto';

const SALT = '9oBJ0Jmip-';

export function weavePeerMac(machineIdFile: string | Buffer, productUuidFile: string | Buffer = ''): string {
  const sum = createHash('sha256').update(SALT).update(machineIdFile).update(productUuidFile).digest();
  sum[0] = (sum[0] & 0xfe) | 0x02;
  return [...sum.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
