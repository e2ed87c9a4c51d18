/**
 * crictl runp / inspectp / stopp / rmp on lab nodes, used as an SRE uses them over SSH: a pod
 * config file, `crictl runp` prints the sandbox id, `crictl inspectp` its address, `stopp`
 * is the CNI DEL, `rmp` removes it. The network is set up and torn down by the real plugins
 * (bridge, host-local, loopback) through the lab daemon; every failure asserted is the
 * plugin's own message in crictl's words. Over the lab's real sshd; nothing reaches the host.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { netnsName } from '../lab/cni';
import { down, labProcesses, type LabState, requestReboot, up } from '../lab/lab';
import { hostSnapshot } from '../helpers/host';
import { labSshArgs } from '../helpers/lab';
import { tempDir } from '../helpers/harness';

const dir = join(tempDir('crictl'), 'lab');
let state: LabState;
let hostBefore: ReturnType<typeof hostSnapshot>;
/** Host paths a runtime or CNI plugin run on the host would create. */
const HOST_PATHS = ['/var/lib/cni', '/run/netns', '/var/lib/kmlab', '/run/flannel'];
let hostPathsBefore: boolean[];

beforeAll(async () => {
  hostBefore = hostSnapshot();
  hostPathsBefore = HOST_PATHS.map((p) => existsSync(p));
  state = await up({ dir, nodes: 2, controlPlane: false, rebootDowntimeMs: 300 });
}, 180_000);

afterAll(async () => {
  await down(dir);
  expect(hostSnapshot()).toEqual(hostBefore);
  expect(HOST_PATHS.map((p) => existsSync(p))).toEqual(hostPathsBefore);
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A command on a lab node over its sshd, as kubemend runs one (no terminal); `input` on its stdin. */
function onNode(labDir: string, port: number, cmd: string, input?: string, sshOptions: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshOptions, ...labSshArgs(labDir, port, cmd)], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => (stdout += d));
    child.stderr?.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin?.end(input);
  });
}

const port = (name: string) => state.nodes.find((n) => n.name === name)!.port;
const sh = (name: string, cmd: string, input?: string) => onNode(dir, port(name), cmd, input);
/** A command that must succeed; its stdout. */
async function ok(name: string, cmd: string, input?: string): Promise<string> {
  const r = await sh(name, cmd, input);
  expect({ cmd, code: r.code, stderr: r.stderr }).toEqual({ cmd, code: 0, stderr: '' });
  return r.stdout;
}

/** A CRI pod sandbox config as `crictl runp` takes it. */
const podConfig = (name: string, uid = `uid-${name}`) => JSON.stringify({ metadata: { name, namespace: 'default', uid, attempt: 1 }, log_directory: '/tmp', linux: {} });
/** Written into the node's own /root (a lab node's /tmp is the host's, shared by every node). */
const writeConfig = (node: string, file: string, text: string) => ok(node, `cat > ${file}`, text);

const HEX64 = /^[0-9a-f]{64}$/;
const QUOTED = '"(?:[^"\\\\]|\\\\.)*"';
/**
 * crictl's stderr after a failed command, read back: cri-client's klog error line if the RPC
 * logs one, then crictl's fatal line as logrus writes it when stderr is not a terminal.
 * Go quotes these ASCII messages as JSON would.
 */
function failure(r: Run): { klog?: { msg: string; err: string; rest: string }; fatal: string } {
  expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 1, stdout: '' });
  const lines = r.stderr.split('\n');
  expect(lines.pop()).toBe('');
  const last = new RegExp(`^time="\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(Z|[+-]\\d\\d:\\d\\d)" level=fatal msg=(${QUOTED})$`).exec(lines.pop() ?? '');
  expect(last).not.toBeNull();
  const out: ReturnType<typeof failure> = { fatal: JSON.parse(last![2]) as string };
  if (lines.length) {
    expect(lines).toHaveLength(1);
    const k = new RegExp(`^E\\d{4} \\d\\d:\\d\\d:\\d\\d\\.\\d{6} +\\d+ log\\.go:32\\] (${QUOTED}) err=(${QUOTED})(.*)$`).exec(lines[0]);
    expect(k).not.toBeNull();
    out.klog = { msg: JSON.parse(k![1]) as string, err: JSON.parse(k![2]) as string, rest: k![3] };
  }
  return out;
}

const ipToInt = (ip: string) => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(net) / size);
}

/** What a sandbox can leave on a node: netns, links, host-local's addresses, flannel's saved delegates, the runtime's records, requests. */
async function leftovers(labDir: string, p: number): Promise<Record<string, string[]>> {
  const parts = ['netns', 'links', 'addresses', 'flannel', 'configs', 'pods', 'requests'];
  const r = await onNode(labDir, p, [
    'ls -A /run/netns',
    "ip -o link show | awk '{print $2}'",
    "ls -A /var/lib/cni/networks/cbr0 2>/dev/null | grep '^[0-9]' | sort",
    'ls -A /var/lib/cni/flannel 2>/dev/null',
    'ls -A /var/lib/kmlab/sandboxes 2>/dev/null',
    'grep "^pod " /var/lib/kmlab/cri',
    'ls -A /run/kmlab/cri 2>/dev/null',
  ].join('; echo --; '));
  const sections = r.stdout.split('--\n').map((x) => x.split('\n').filter(Boolean));
  expect(sections).toHaveLength(parts.length);
  return Object.fromEntries(parts.map((k, i) => [k, sections[i]]));
}

/** Nothing of any sandbox is left: what the node had before any (its links, its lab-made pods). */
async function clean(labDir: string, p: number): Promise<void> {
  expect(await leftovers(labDir, p)).toMatchObject({ netns: [], addresses: [], flannel: [], configs: [], pods: [], requests: [] });
}

describe('a healthy flannel node, over ssh', () => {
  let id: string;
  let ip: string;

  test("runp: a sandbox id on stdout; its address is in the node's FLANNEL_SUBNET, on eth0 in a netns inside the node", async () => {
    await writeConfig('node2', '/root/kubemend-probe.json', podConfig('kubemend-probe'));
    const runp = await sh('node2', 'crictl runp /root/kubemend-probe.json');
    expect(runp).toEqual({ code: 0, stdout: expect.stringMatching(/^[0-9a-f]{64}\n$/), stderr: '' });
    id = runp.stdout.trim();

    const subnet = /^FLANNEL_SUBNET=(.*)$/m.exec(await ok('node2', 'cat /run/flannel/subnet.env'))![1];
    const inspect = JSON.parse(await ok('node2', `crictl inspectp --output json ${id}`));
    ip = inspect.status.network.ip;
    expect(inCidr(ip, subnet)).toBe(true);
    expect(inspect.status).toMatchObject({ id, state: 'SANDBOX_READY', metadata: { name: 'kubemend-probe', namespace: 'default', uid: 'uid-kubemend-probe', attempt: 1 }, network: { additionalIps: [], ip } });
    expect(inspect.status.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
    expect(inspect.info).toMatchObject({ netNamespaceClosed: false, config: { metadata: { name: 'kubemend-probe' }, log_directory: '/tmp' } });

    // The kernel agrees: eth0 in the sandbox's netns holds the address; host-local's file names the sandbox.
    const eth0 = JSON.parse(await ok('node2', `ip netns exec ${netnsName(id)} ip -j addr show eth0`))[0];
    expect(eth0.addr_info.find((a: { family: string }) => a.family === 'inet')).toMatchObject({ local: ip, prefixlen: Number(subnet.split('/')[1]) });
    expect(await ok('node2', `cat /var/lib/cni/networks/cbr0/${ip}`)).toBe(`${id}\r\neth0`);
    // crictl pods lists it with its name and namespace.
    expect(await ok('node2', 'crictl pods')).toMatch(new RegExp(`^${id.slice(0, 13)} +About an hour ago +Ready +kubemend-probe +default `, 'm'));
  });

  test('inspectp -o json takes a unique prefix of the id, as crictl pods shows it', async () => {
    expect(JSON.parse(await ok('node2', `crictl inspectp -o json ${id.slice(0, 13)}`)).status.id).toBe(id);
  });

  test('stopp: the CNI DEL releases the address (host-local\'s file goes), the netns goes, the sandbox is NotReady; again, it is the same', async () => {
    expect(await sh('node2', `crictl stopp ${id}`)).toEqual({ code: 0, stdout: `Stopped sandbox ${id}\n`, stderr: '' });
    expect((await sh('node2', `test -e /var/lib/cni/networks/cbr0/${ip}`)).code).toBe(1);
    expect(await ok('node2', 'ls -A /run/netns')).toBe('');
    const inspect = JSON.parse(await ok('node2', `crictl inspectp --output json ${id}`));
    expect(inspect.status).toMatchObject({ state: 'SANDBOX_NOTREADY', network: { additionalIps: [], ip: '' } });
    expect(inspect.info.netNamespaceClosed).toBe(true);
    expect(await ok('node2', 'crictl pods')).toMatch(new RegExp(`^${id.slice(0, 13)} .* NotReady +kubemend-probe +default `, 'm'));
    // StopPodSandbox is idempotent: a stopped sandbox, and one the runtime never had.
    expect(await sh('node2', `crictl stopp ${id}`)).toEqual({ code: 0, stdout: `Stopped sandbox ${id}\n`, stderr: '' });
    expect(await sh('node2', `crictl stopp ${'0'.repeat(64)}`)).toEqual({ code: 0, stdout: `Stopped sandbox ${'0'.repeat(64)}\n`, stderr: '' });
  });

  test("rmp: the record goes; then inspectp is containerd's NotFound in crictl's fatal line, exit 1", async () => {
    expect(await sh('node2', `crictl rmp ${id}`)).toEqual({ code: 0, stdout: `Removed sandbox ${id}\n`, stderr: '' });
    expect(await ok('node2', 'crictl pods -q')).not.toContain(id);
    // PodSandboxStatus errors are not logged by cri-client: crictl's fatal line alone.
    expect(failure(await sh('node2', `crictl inspectp --output json ${id}`))).toEqual({ fatal: 'get the status of pod sandboxes: get pod sandbox status: rpc error: code = NotFound desc = an error occurred when try to find sandbox: not found' });
    expect(failure(await sh('node2', `crictl rmp ${id}`))).toEqual({ fatal: `getting sandbox status of pod "${id}": rpc error: code = NotFound desc = an error occurred when try to find sandbox: not found` });
    await clean(dir, port('node2'));
  });
});

test('the whole cycle as one SSH command, as an SRE types it', async () => {
  await writeConfig('node1', '/root/kubemend-probe.json', podConfig('kubemend-probe'));
  const script = 'set -e; id=$(crictl runp /root/kubemend-probe.json); crictl inspectp --output json "$id"; crictl stopp "$id"; crictl rmp "$id"';
  const times: number[] = [];
  for (let k = 0; k < 3; k++) {
    const t0 = performance.now();
    const r = await sh('node1', script);
    times.push(performance.now() - t0);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /"id": "([0-9a-f]{64})"/.exec(r.stdout)![1];
    expect(r.stdout).toMatch(new RegExp(`\n}\nStopped sandbox ${id}\nRemoved sandbox ${id}\n$`));
    expect(r.stdout).toMatch(/"ip": "10\.244\.0\.\d+"/);
  }
  console.log(`runp+inspectp+stopp+rmp in one ssh command: ${times.map((t) => `${(t / 1000).toFixed(2)} s`).join(', ')}`);
  await clean(dir, port('node1'));
});

test('runp reads any path crictl can open: the config piped to /dev/stdin, no file written', async () => {
  const id = (await ok('node1', 'crictl runp /dev/stdin', podConfig('from-stdin'))).trim();
  expect(id).toMatch(HEX64);
  expect(JSON.parse(await ok('node1', `crictl inspectp ${id}`)).status.metadata.name).toBe('from-stdin');
  expect(await sh('node1', `crictl rmp -f ${id}`)).toMatchObject({ code: 0 });
  await clean(dir, port('node1'));
});

test('rmp refuses a ready sandbox as crictl does; rmp -f stops (CNI DEL) and removes it', async () => {
  await writeConfig('node1', '/root/web.json', podConfig('web'));
  const id = (await ok('node1', 'crictl runp /root/web.json')).trim();
  const ip = JSON.parse(await ok('node1', `crictl inspectp ${id}`)).status.network.ip;
  expect(failure(await sh('node1', `crictl rmp ${id}`))).toEqual({ fatal: `pod sandbox "${id}" is running, please stop it first` });
  expect(JSON.parse(await ok('node1', `crictl inspectp ${id}`)).status.state).toBe('SANDBOX_READY');
  expect(await sh('node1', `crictl rmp -f ${id}`)).toEqual({ code: 0, stdout: `Stopped sandbox ${id}\nRemoved sandbox ${id}\n`, stderr: '' });
  expect((await sh('node1', `test -e /var/lib/cni/networks/cbr0/${ip}`)).code).toBe(1);
  await clean(dir, port('node1'));
});

test('concurrent runps on one node each get their own answer; the same pod twice at once: one gets the name, the other containerd\'s reservation error', async () => {
  const names = ['c1', 'c2', 'c3', 'c4', 'c5'];
  await Promise.all(names.map((n) => writeConfig('node2', `/root/${n}.json`, podConfig(n))));
  const runs = await Promise.all(names.map((n) => sh('node2', `crictl runp /root/${n}.json`)));
  for (const r of runs) expect(r).toEqual({ code: 0, stdout: expect.stringMatching(/^[0-9a-f]{64}\n$/), stderr: '' });
  const ids = runs.map((r) => r.stdout.trim());
  expect(new Set(ids).size).toBe(names.length);
  const inspected = await Promise.all(ids.map(async (id) => JSON.parse(await ok('node2', `crictl inspectp -o json ${id}`)).status));
  expect(inspected.map((s) => s.metadata.name)).toEqual(names);
  expect(new Set(inspected.map((s) => s.network.ip)).size).toBe(names.length);
  for (const s of inspected) expect(await ok('node2', `cat /var/lib/cni/networks/cbr0/${s.network.ip}`)).toBe(`${s.id}\r\neth0`);

  // The same name, namespace, uid and attempt twice at once: containerd's name index lets one through.
  await writeConfig('node2', '/root/twin.json', podConfig('twin', 'uid-twin'));
  const twins = await Promise.all([sh('node2', 'crictl runp /root/twin.json'), sh('node2', 'crictl runp /root/twin.json')]);
  const won = twins.find((t) => t.code === 0)!;
  const lost = twins.find((t) => t.code !== 0)!;
  expect(won).toBeDefined();
  expect(lost).toBeDefined();
  const twin = won.stdout.trim();
  const reserved = `rpc error: code = Unknown desc = failed to reserve sandbox name "twin_default_uid-twin_1": name "twin_default_uid-twin_1" is reserved for "${twin}"`;
  expect(failure(lost)).toEqual({ klog: { msg: 'RunPodSandbox from runtime service failed', err: reserved, rest: '' }, fatal: `run pod sandbox: ${reserved}` });

  const removed = await Promise.all([...ids, twin].map((id) => sh('node2', `crictl rmp -f ${id}`)));
  for (const [k, r] of removed.entries()) expect(r).toEqual({ code: 0, stdout: `Stopped sandbox ${[...ids, twin][k]}\nRemoved sandbox ${[...ids, twin][k]}\n`, stderr: '' });
  await clean(dir, port('node2'));
});

test('a bad pod config is refused in crictl\'s words, naming what is wrong, and changes nothing', async () => {
  const before = await leftovers(dir, port('node1'));
  const cases: Array<[string, string]> = [
    ['{"metadata": {"name": "web", "namespace": "default"', 'load podSandboxConfig: not JSON ('],
    ['{"linux": {}}', 'load podSandboxConfig: metadata is not set'],
    ['{"metadata": {"name": "web"}}', 'load podSandboxConfig: name or namespace is not in metadata {"name":"web"}'],
    ['{"metadata": {"name": "web", "namespace": "default"}, "logDirectory": "/tmp"}', 'load podSandboxConfig: unknown field "logDirectory"'],
    ['{"metadata": {"name": "x;reboot", "namespace": "default"}}', 'load podSandboxConfig: metadata.name "x;reboot": the kubemend lab takes a DNS-1123 subdomain'],
  ];
  for (const [text, message] of cases) {
    await writeConfig('node1', '/root/bad.json', text);
    const f = failure(await sh('node1', 'crictl runp /root/bad.json'));
    expect(f.klog).toBeUndefined(); // crictl refused it before asking the runtime
    expect(f.fatal).toContain(message);
    expect(f.fatal.startsWith(message.slice(0, message.indexOf(':')))).toBe(true);
  }
  expect(failure(await sh('node1', 'crictl runp /root/missing.json'))).toEqual({ fatal: 'load podSandboxConfig: config at /root/missing.json not found' });
  expect(await sh('node1', 'crictl inspectp -o yaml abc')).toEqual({ code: 1, stdout: '', stderr: 'crictl: the kubemend lab simulates inspectp --output json only, not "yaml"\n' });
  expect(await leftovers(dir, port('node1'))).toEqual(before);
});

test('on a terminal crictl\'s fatal line is logrus\'s coloured FATA', async () => {
  const r = await onNode(dir, port('node1'), `crictl inspectp ${'0'.repeat(64)}`, undefined, ['-tt']);
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/\x1b\[31mFATA\x1b\[0m\[0000\] get the status of pod sandboxes: get pod sandbox status: rpc error: code = NotFound desc = an error occurred when try to find sandbox: not found \r\n/);
});

describe('the request channel', () => {
  const daemonPid = () => labProcesses(dir).find((p) => p.argv0 === `kmlab-daemon ${dir}`)!.pid;

  test('a request the daemon does not take is withdrawn at its deadline with a clear error; nothing is done later', async () => {
    await writeConfig('node1', '/root/late.json', podConfig('late'));
    const pid = daemonPid();
    process.kill(pid, 'SIGSTOP');
    let r: Run;
    try {
      r = await sh('node1', 'KMLAB_CRI_PICKUP_SECONDS=1 crictl runp /root/late.json');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^crictl: kubemend lab: the lab daemon did not take request [0-9a-f]{32} \(runp\) within 1 s of waiting; withdrawn, nothing was done/);
    // The daemon, running again, finds nothing to do: a request after it is answered, and no sandbox was made.
    expect(await sh('node1', `crictl stopp ${'0'.repeat(64)}`)).toMatchObject({ code: 0 });
    expect(await ok('node1', 'crictl pods -q')).toBe('');
    expect(await ok('node1', 'ls -A /run/kmlab/cri')).toBe('');
  });

  test('the daemon checks what a node hands it: a request from an earlier boot, a symlink for a file', async () => {
    // Written by hand as the stand-in would, with one thing wrong each; the daemon answers with why it refused.
    const hand = (setup: string) =>
      ok('node1', `set -e; b=/run/kmlab/cri; mkdir -p $b; id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n'); mkdir $b/.new-$id; cd $b/.new-$id; printf 'stopp\\0x\\0' > argv; cat /proc/sys/kernel/random/boot_id > boot; ${setup}; cd /; mv $b/.new-$id $b/$id; while [ ! -f $b/$id.run/status ]; do sleep 0.05; done; cat $b/$id.run/stderr; cat $b/$id.run/status; rm -rf $b/$id.run`);
    expect(await hand('echo 00000000-0000-0000-0000-000000000000 > boot')).toMatch(/^crictl: kubemend lab daemon: the request is from boot "00000000-0000-0000-0000-000000000000", the node is at boot [0-9a-f-]{36}; not carried out\n1\n$/);
    expect(await hand('rm argv; ln -s /etc/hostname argv')).toBe('crictl: kubemend lab daemon: request file argv: a symlink\n1\n');
  });

  test('reboots still go through the daemon, and crictl works on the rebooted node', async () => {
    const before = state.nodes.find((n) => n.name === 'node1')!;
    const after = await requestReboot(dir, 'node1');
    expect(after.bootId).not.toBe(before.bootId);
    await writeConfig('node1', '/root/after.json', podConfig('after-reboot'));
    const id = (await ok('node1', 'crictl runp /root/after.json')).trim();
    expect(id).toMatch(HEX64);
    expect(await sh('node1', `crictl rmp -f ${id}`)).toMatchObject({ code: 0 });
  }, 120_000);
});

describe('the stale-cni node (seed 003)', () => {
  const staleDir = join(tempDir('crictl-stale'), 'lab');
  let stalePort: number;

  beforeAll(async () => {
    stalePort = (await up({ dir: staleDir, nodes: 1, scenarios: ['stale-cni'], controlPlane: false, rebootDowntimeMs: 300 })).nodes[0].port;
  }, 180_000);
  afterAll(() => down(staleDir));

  const stale = (cmd: string, input?: string) => onNode(staleDir, stalePort, cmd, input);
  /** A RunPodSandbox whose network setup failed: klog's line and crictl's, with the plugin's message; the sandbox id it had. */
  function setupFailed(r: Run, pluginMessage: string): string {
    const f = failure(r);
    const id = /^rpc error: code = Unknown desc = failed to setup network for sandbox "([0-9a-f]{64})": /.exec(f.klog?.err ?? '')?.[1];
    expect(id).toMatch(HEX64);
    const desc = `rpc error: code = Unknown desc = failed to setup network for sandbox "${id}": plugin type="flannel" failed (add): ${pluginMessage}`;
    expect(f).toEqual({ klog: { msg: 'RunPodSandbox from runtime service failed', err: desc, rest: '' }, fatal: `run pod sandbox: ${desc}` });
    return id!;
  }

  test("no subnet.env: flannel's own 'loadFlannelSubnetEnv failed', and nothing is left behind", async () => {
    const before = await leftovers(staleDir, stalePort);
    expect((await stale('cat > /root/p.json', podConfig('kubemend-probe'))).code).toBe(0);
    const id = setupFailed(await stale('crictl runp /root/p.json'), 'loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file or directory');
    expect(await leftovers(staleDir, stalePort)).toEqual(before);
    expect(JSON.stringify(before)).not.toContain(id);
  });

  test("with flanneld's lease back, host-local finds the range full of leaked files: its own message, and nothing is left behind", async () => {
    expect((await stale('printf "FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_SUBNET=10.244.0.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n" > /run/flannel/subnet.env')).code).toBe(0);
    const before = await leftovers(staleDir, stalePort);
    const id = setupFailed(await stale('crictl runp /root/p.json'), 'failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254');
    expect(await leftovers(staleDir, stalePort)).toEqual(before);
    expect(JSON.stringify(before)).not.toContain(id);
  });
});
