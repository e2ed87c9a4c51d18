/**
 * Whether a TCP socket listens, read from the kernel's table (/proc/<pid>/net/tcp, the table
 * of that process's network namespace): the lab asks the kernel, not the server, so asking
 * starts no process and costs the server nothing.
 */
import { endianness } from 'node:os';

/** TCP_LISTEN in the table's `st` column (include/net/tcp_states.h). */
const LISTEN = '0A';

/**
 * The table's spelling of an IPv4 address and port: the address is the network-order word
 * printed as a native integer (%08X), so its bytes come out reversed on a little-endian
 * machine; the port is in host order (%04X).
 */
export function tcpTableEndpoint(address: string, port: number, littleEndian = endianness() === 'LE'): string {
  const octets = address.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) throw new Error(`not an IPv4 address: ${JSON.stringify(address)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`not a TCP port: ${port}`);
  const hex = (littleEndian ? octets.reverse() : octets).map((o) => o.toString(16).padStart(2, '0')).join('');
  return `${hex}:${port.toString(16).padStart(4, '0')}`.toUpperCase();
}

/**
 * The inode of the socket in `table` (the text of a /proc/.../net/tcp) listening on exactly
 * address:port, or undefined. A process holds it if one of its /proc/<pid>/fd links reads
 * "socket:[<inode>]".
 */
export function listeningInode(table: string, address: string, port: number, littleEndian = endianness() === 'LE'): string | undefined {
  const want = tcpTableEndpoint(address, port, littleEndian);
  // "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
  // then "   0: 0100007F:A151 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4846 ..."
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === want && f[3] === LISTEN) return f[9];
  }
  return undefined;
}

/** Whether `table` has a socket listening on exactly address:port. */
export function listensOn(table: string, address: string, port: number, littleEndian = endianness() === 'LE'): boolean {
  return listeningInode(table, address, port, littleEndian) !== undefined;
}
