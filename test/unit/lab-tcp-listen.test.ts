import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { listeningInode, listensOn, tcpTableEndpoint } from '../lab/tcp-listen';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const row = (local: string, remote: string, st: string, inode = '4846') => `   0: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 000000005c02359c 100 0 0 10 0`;

test.each([
  ['127.0.0.1', 3306, true, '0100007F:0CEA'],
  ['10.213.0.11', 22, true, '0B00D50A:0016'],
  ['10.213.0.11', 22, false, '0AD5000B:0016'],
  ['192.168.56.1', 65535, true, '0138A8C0:FFFF'],
])('%s:%i in the table (little-endian %s) is %s', (address, port, le, text) => {
  expect(tcpTableEndpoint(address, port, le)).toBe(text);
});

test.each([['10.213.0'], ['10.213.0.256'], ['::1'], ['a.b.c.d']])('refuses %j as an address', (a) => {
  expect(() => tcpTableEndpoint(a, 22)).toThrow(/not an IPv4 address/);
});

test.each([[0], [65536], [22.5]])('refuses port %d', (p) => {
  expect(() => tcpTableEndpoint('127.0.0.1', p)).toThrow(/not a TCP port/);
});

test('a listening socket on exactly that address and port, nothing else', () => {
  const table = [HEADER, row('0B00D50A:0016', '00000000:0000', '0A'), row('0100007F:A151', '0100007F:9C40', '01'), ''].join('\n');
  expect(listensOn(table, '10.213.0.11', 22, true)).toBe(true);
  expect(listensOn(table, '10.213.0.12', 22, true)).toBe(false); // another address
  expect(listensOn(table, '10.213.0.11', 2222, true)).toBe(false); // another port
  expect(listensOn(table, '127.0.0.1', 41297, true)).toBe(false); // 0xA151 is there, but ESTABLISHED
  expect(listensOn(HEADER, '10.213.0.11', 22, true)).toBe(false);
  // a header that happened to match is never read as a socket
  expect(listensOn(`${row('0B00D50A:0016', '00000000:0000', '0A')}\n`, '10.213.0.11', 22, true)).toBe(false);
});

test("the listening socket's inode, not a connection's on the same port", () => {
  const table = [HEADER, row('0100007F:A151', '0100007F:9C40', '01', '777'), row('0100007F:A151', '00000000:0000', '0A', '10458'), ''].join('\n');
  expect(listeningInode(table, '127.0.0.1', 0xa151, true)).toBe('10458');
  expect(listeningInode(table, '127.0.0.1', 0x9c40, true)).toBeUndefined();
});

test('the kernel table of this process: a server listens from listen() until close()', async () => {
  const table = () => readFileSync('/proc/self/net/tcp', 'utf8');
  const srv: Server = createServer((s) => s.destroy());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  expect(listensOn(table(), '127.0.0.1', port)).toBe(true);
  // the socket is this process's: one of its descriptors is that inode
  const inode = listeningInode(table(), '127.0.0.1', port);
  const links = readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return ''; // the directory's own descriptor, closed by now
    }
  });
  expect(links).toContain(`socket:[${inode}]`);
  // a connection to it shows up in the table too, but not as listening on the client's port
  const client = createConnection({ host: '127.0.0.1', port });
  await new Promise((r) => client.once('connect', r));
  expect(listensOn(table(), '127.0.0.1', client.localPort!)).toBe(false);
  client.destroy();
  await new Promise((r) => srv.close(r));
  expect(listensOn(table(), '127.0.0.1', port)).toBe(false);
});
