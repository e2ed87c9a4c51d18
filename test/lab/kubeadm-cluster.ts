/**
 * The lab's control plane as `kubeadm init` leaves it, so that the real kubeadm on the nodes
 * (join, token create/delete/list; standins/kubeadm) works against it:
 *  - a forwarder in the control-plane node's network namespace listening on :6443 (all its
 *    addresses, as kube-apiserver's default --bind-address) to the API server on the host's
 *    127.0.0.1, whose serving certificate carries the node's addresses (control-plane.ts);
 *  - on the control-plane node: /etc/kubernetes/admin.conf (server https://<advertised>:6443,
 *    the lab CA, the admin's client certificate) and /etc/kubernetes/pki/ca.{crt,key}, the lab CA;
 *  - on every joined node: /etc/kubernetes/pki/ca.crt, the lab CA, and the kubelet's client
 *    credentials as its TLS bootstrap leaves them (/var/lib/kubelet/pki/kubelet-client-current.pem,
 *    kubelet.conf pointing at it), signed by the lab CA;
 *  - the objects kubeadm init makes that join reads, made by the real kubeadm run in the
 *    control-plane node: `kubeadm init phase upload-config all` (kubeadm-config and
 *    kubelet-config in kube-system, their RBAC) and `kubeadm init phase bootstrap-token`
 *    (cluster-info in kube-public, which the bootstrapsigner signs; the RBAC that lets bootstrap
 *    tokens create CSRs, auto-approves them, lets nodes renew). The bootstrap token init makes is
 *    deleted: the lab's cluster has no join token until one is created.
 */
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, stringify } from 'yaml';
import { TOOLS_BIN } from '../../worker/paths';
import { adminRequest, controlPlaneInfo } from './control-plane';
import { LabError, labProcesses, type LabState } from './lab';
import { Patience } from './patience';
import { advertisedAddress, API_SERVER_PORT, CONTROL_PLANE_ADDRESS, joinedAtUp, NAT_ADDRESS } from './topology';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const KUBEADM = join(TOOLS_BIN, 'kubeadm');

export const KUBELET_CONF = '/etc/kubernetes/kubelet.conf';
export const BOOTSTRAP_KUBELET_CONF = '/etc/kubernetes/bootstrap-kubelet.conf';
export const KUBELET_PKI = '/var/lib/kubelet/pki';
export const KUBELET_CLIENT_CURRENT = `${KUBELET_PKI}/kubelet-client-current.pem`;

/** The control-plane node's addresses the API server's serving certificate names (its host-only and NAT addresses). */
export const CONTROL_PLANE_NODE_IPS = [CONTROL_PLANE_ADDRESS, NAT_ADDRESS.split('/')[0]];

const pkiDir = (dir: string) => join(dir, 'cp', 'pki');

function holderOf(dir: string, node: string): number | undefined {
  return labProcesses(dir).find((p) => p.argv0 === `kmlab-node ${dir} ${node}`)?.pid;
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', maxBuffer: 8 << 20, env: { PATH } }, (err, stdout, stderr) =>
      err ? reject(new LabError(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}${stdout ? `\n${stdout.trim()}` : ''}`)) : resolve(stdout),
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** A file in the node, written through its mount namespace (its overlays), as root on the node would. */
function writeNodeFile(holder: number, path: string, text: string, mode = 0o600): void {
  const at = `/proc/${holder}/root${path}`;
  mkdirSync(dirname(at), { recursive: true });
  writeFileSync(`${at}.kmlab-tmp`, text, { mode });
  // rename inside the node: the same directory, so the file appears whole.
  renameIn(holder, `${path}.kmlab-tmp`, path);
}

function renameIn(holder: number, from: string, to: string): void {
  renameSync(`/proc/${holder}/root${from}`, `/proc/${holder}/root${to}`);
}

/**
 * A file as the node sees it, or undefined. Symbolic links are followed inside the node: the
 * kernel would resolve an absolute target through /proc/<pid>/root against the host's root.
 */
export function readNodeFile(holder: number, path: string): string | undefined {
  let p = path;
  try {
    for (let hops = 0; hops < 8; hops++) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${holder}/root${p}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err; // EINVAL: not a link
        return readFileSync(`/proc/${holder}/root${p}`, 'utf8');
      }
      p = target.startsWith('/') ? target : join(dirname(p), target);
    }
  } catch {
    return undefined;
  }
  return undefined;
}

// ---- Certificates (openssl, as control-plane.ts makes the lab's) ----

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A client key and certificate for `subject`, signed by the CA in `caDir` (ca.crt, ca.key): PEM texts. */
export async function signClient(caDir: string, subject: string, work: string): Promise<{ cert: string; key: string }> {
  mkdirSync(work, { recursive: true });
  const base = join(work, `client-${process.pid}-${Math.random().toString(16).slice(2)}`);
  try {
    writeFileSync(`${base}.ext`, 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
    await run('openssl', ['req', ...EC, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', subject]);
    await run('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', join(caDir, 'ca.crt'), '-CAkey', join(caDir, 'ca.key'), '-CAcreateserial', '-days', '30', '-out', `${base}.crt`, '-extfile', `${base}.ext`]);
    return { cert: readFileSync(`${base}.crt`, 'utf8'), key: readFileSync(`${base}.key`, 'utf8') };
  } finally {
    for (const ext of ['ext', 'key', 'csr', 'crt']) rmSync(`${base}.${ext}`, { force: true });
  }
}

/** A CA of another cluster (the "previous cluster" of a node that kept its credentials). */
export async function makeOtherCa(caDir: string): Promise<void> {
  mkdirSync(caDir, { recursive: true });
  await run('openssl', ['req', '-x509', ...EC, '-keyout', join(caDir, 'ca.key'), '-out', join(caDir, 'ca.crt'), '-days', '30', '-subj', '/CN=kubernetes', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** kubelet.conf as the kubelet writes it after its TLS bootstrap (pkg/kubelet/certificate/bootstrap): the client pair in one file. */
export function kubeletKubeconfig(server: string, caPem: string): string {
  return stringify({
    apiVersion: 'v1',
    clusters: [{ cluster: { 'certificate-authority-data': b64(caPem), server }, name: 'default-cluster' }],
    contexts: [{ context: { cluster: 'default-cluster', namespace: 'default', user: 'default-auth' }, name: 'default-context' }],
    'current-context': 'default-context',
    kind: 'Config',
    preferences: {},
    users: [{ name: 'default-auth', user: { 'client-certificate': KUBELET_CLIENT_CURRENT, 'client-key': KUBELET_CLIENT_CURRENT } }],
  });
}

/** kubeadm's admin.conf: cluster "kubernetes", user "kubernetes-admin", credentials inline. */
function adminKubeconfig(server: string, caPem: string, cert: string, key: string): string {
  return stringify({
    apiVersion: 'v1',
    clusters: [{ cluster: { 'certificate-authority-data': b64(caPem), server }, name: 'kubernetes' }],
    contexts: [{ context: { cluster: 'kubernetes', user: 'kubernetes-admin' }, name: 'kubernetes-admin@kubernetes' }],
    'current-context': 'kubernetes-admin@kubernetes',
    kind: 'Config',
    preferences: {},
    users: [{ name: 'kubernetes-admin', user: { 'client-certificate-data': b64(cert), 'client-key-data': b64(key) } }],
  });
}

/** The kubelet's dated client file and the kubelet-client-current.pem link to it, as its certificate manager keeps them. */
function writeKubeletClient(holder: number, cert: string, key: string, at = new Date()): void {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${at.getUTCFullYear()}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())}-${p(at.getUTCHours())}-${p(at.getUTCMinutes())}-${p(at.getUTCSeconds())}`;
  const file = `${KUBELET_PKI}/kubelet-client-${stamp}.pem`;
  writeNodeFile(holder, file, `${cert.trim()}\n${key.trim()}\n`);
  const link = `/proc/${holder}/root${KUBELET_CLIENT_CURRENT}`;
  rmSync(link, { force: true });
  symlinkSync(file, link);
}

/** The node's kubelet credentials, signed by the CA in `caDir`, with kubelet.conf naming `server`. */
export async function writeKubeletCredentials(dir: string, holder: number, node: string, server: string, caDir: string): Promise<void> {
  const { cert, key } = await signClient(caDir, `/O=system:nodes/CN=system:node:${node}`, join(dir, 'cp', 'tmp'));
  writeKubeletClient(holder, cert, key);
  writeNodeFile(holder, KUBELET_CONF, kubeletKubeconfig(server, readFileSync(join(caDir, 'ca.crt'), 'utf8')));
}

// ---- The API server on the control-plane node's :6443 ----

const forwarderMarker = (dir: string, node: string) => `kmlab-fwd ${dir} ${node} apiserver`;

/** One forwarded connection: $1 the API server's port, $2 the lab dir, $3 its network namespace, $4 the node. */
const API_CONNECT = [
  '#!/bin/bash',
  "# kubemend lab: one connection to the control-plane node's :6443, made to the API server on the host's 127.0.0.1 (test/lab/kubeadm-cluster.ts)",
  'exec nsenter --net="$3" bash -c \'exec -a "$0" socat STDIO "TCP:127.0.0.1:$1"\' "kmlab-fwd $2 $4 apiserver-connection" "$1"',
  '',
].join('\n');

/**
 * Starts, unless it runs, the forwarder on the control-plane node's :6443 (every address of
 * the node, as kube-apiserver binds 0.0.0.0) to the API server. It runs in the node's network
 * and PID namespaces, so it dies with the node; the lab daemon starts it again after a reboot.
 */
export async function ensureApiServerForwarder(dir: string, node: string): Promise<void> {
  const holder = holderOf(dir, node);
  if (holder === undefined) throw new LabError(`${node} is down`);
  const marker = forwarderMarker(dir, node);
  if (labProcesses(dir).some((p) => p.argv0 === marker && procComm(p.pid) === 'socat')) return;
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('the lab has no control plane');
  const port = new URL(info.server).port;
  const api = labProcesses(dir).find((p) => p.argv0 === `kmlab-cp ${dir} kube-apiserver`);
  if (!api) throw new LabError("the lab's kube-apiserver is not running");
  const apiNet = `/proc/${api.pid}/ns/net`;
  readlinkSync(apiNet);
  const connect = join(dir, 'nodes', node, 'apiserver-connect.sh');
  writeFileSync(connect, API_CONNECT, { mode: 0o755 });
  const log = openSync(join(dir, 'nodes', node, 'apiserver-forwarder.log'), 'a');
  const child = spawn(
    'bash',
    ['-c', 'exec -a "$0" nsenter -t "$1" -n -p -- bash -c \'exec -a "$0" socat "TCP-LISTEN:$1,reuseaddr,fork" "EXEC:bash $2 $3 $4 $5 $6"\' "$0" "${@:2}"', marker, String(holder), String(API_SERVER_PORT), connect, port, dir, apiNet, node],
    { detached: true, stdio: ['ignore', log, log], env: { PATH } },
  );
  closeSync(log);
  child.on('error', () => undefined);
  child.unref();
  const patience = new Patience(10_000);
  while (!patience.exhausted) {
    const ok = await run('nsenter', ['-t', String(holder), '-n', '--', 'bash', '-c', 'exec 3<>"/dev/tcp/$1/$2"', 'kmlab-probe', CONTROL_PLANE_ADDRESS, String(API_SERVER_PORT)]).then(() => true, () => false);
    if (ok) return;
    if (child.exitCode !== null) break;
    await patience.sleep(50);
  }
  throw new LabError(`${node}: the API server forwarder did not listen on :${API_SERVER_PORT}${existsSync(join(dir, 'nodes', node, 'apiserver-forwarder.log')) ? `: ${readFileSync(join(dir, 'nodes', node, 'apiserver-forwarder.log'), 'utf8').slice(-500)}` : ''}`);
}

function procComm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

// ---- kubeadm init's state ----

/** What `kubeadm init` was given: the lab's cluster (its kubelet-config is what join writes to /var/lib/kubelet/config.yaml). */
function initConfiguration(cpName: string, advertised: string): string {
  return [
    stringify({
      apiVersion: 'kubeadm.k8s.io/v1beta4',
      kind: 'InitConfiguration',
      localAPIEndpoint: { advertiseAddress: advertised, bindPort: API_SERVER_PORT },
      nodeRegistration: { name: cpName, criSocket: 'unix:///var/run/containerd/containerd.sock' },
    }),
    stringify({
      apiVersion: 'kubeadm.k8s.io/v1beta4',
      kind: 'ClusterConfiguration',
      kubernetesVersion: 'v1.34.4',
      clusterName: 'kubernetes',
      networking: { podSubnet: '10.244.0.0/16', serviceSubnet: '10.96.0.0/12', dnsDomain: 'cluster.local' },
    }),
    stringify({ apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', cgroupDriver: 'systemd' }),
  ].join('---\n');
}

/** Runs the real kubeadm inside a node (its network, mount, UTS and PID namespaces), as root there would. */
export function kubeadmIn(holder: number, args: string[], input?: string): Promise<string> {
  return run('nsenter', ['-t', String(holder), '-n', '-m', '-u', '-p', '--', KUBEADM, ...args], input);
}

/**
 * Makes the started control plane look kubeadm-init'ed (see the file comment). The nodes are
 * up; the joined ones get real credentials in place of kubeadm's placeholders.
 */
export async function kubeadmInit(state: LabState): Promise<void> {
  const { dir } = state;
  const pki = pkiDir(dir);
  const caPem = readFileSync(join(pki, 'ca.crt'), 'utf8');
  const cp = state.nodes.find((n) => n.role === 'control-plane')!;
  const advertised = advertisedAddress(state.scenarios);
  await ensureApiServerForwarder(dir, cp.name);
  const cpHolder = holderOf(dir, cp.name)!;
  writeNodeFile(cpHolder, '/etc/kubernetes/pki/ca.crt', caPem, 0o644);
  writeNodeFile(cpHolder, '/etc/kubernetes/pki/ca.key', readFileSync(join(pki, 'ca.key'), 'utf8'));
  writeNodeFile(cpHolder, '/etc/kubernetes/admin.conf', adminKubeconfig(`https://${advertised}:${API_SERVER_PORT}`, caPem, readFileSync(join(pki, 'admin.crt'), 'utf8'), readFileSync(join(pki, 'admin.key'), 'utf8')));
  // The configuration init was given, in the node's /run (tmpfs) while the phases read it.
  const config = '/run/kubeadm-init.yaml';
  writeNodeFile(cpHolder, config, initConfiguration(cp.name, advertised));
  try {
    await kubeadmIn(cpHolder, ['init', 'phase', 'upload-config', 'all', '--config', config]);
    await kubeadmIn(cpHolder, ['init', 'phase', 'bootstrap-token', '--config', config, '--skip-token-print']);
  } finally {
    rmSync(`/proc/${cpHolder}/root${config}`, { force: true });
  }
  await deleteBootstrapTokens(dir);
  // Each joined node's kubelet credentials, as its TLS bootstrap left them.
  for (const n of state.nodes.filter((x) => joinedAtUp(state.scenarios, x.role))) {
    const holder = holderOf(dir, n.name)!;
    writeNodeFile(holder, '/etc/kubernetes/pki/ca.crt', caPem, 0o644);
    await writeKubeletCredentials(dir, holder, n.name, `https://${n.role === 'control-plane' ? advertised : CONTROL_PLANE_ADDRESS}:${API_SERVER_PORT}`, pki);
  }
}

/** Deletes every bootstrap token (the one `kubeadm init phase bootstrap-token` made). */
async function deleteBootstrapTokens(dir: string): Promise<void> {
  const port = Number(new URL(controlPlaneInfo(dir)!.server).port);
  const list = await adminRequest(dir, port, 'GET', `/api/v1/namespaces/kube-system/secrets?fieldSelector=${encodeURIComponent('type=bootstrap.kubernetes.io/token')}`);
  if (list.status !== 200) throw new LabError(`listing bootstrap tokens: HTTP ${list.status} ${list.body.slice(0, 300)}`);
  for (const s of (JSON.parse(list.body) as { items: Array<{ metadata: { name: string } }> }).items) {
    const r = await adminRequest(dir, port, 'DELETE', `/api/v1/namespaces/kube-system/secrets/${s.metadata.name}`);
    if (r.status !== 200) throw new LabError(`deleting ${s.metadata.name}: HTTP ${r.status}`);
  }
}

// ---- The kubelet's side (the lab daemon's kubelet, kubelet.ts) ----

interface Kubeconfig {
  clusters?: Array<{ name: string; cluster: { server?: string; 'certificate-authority-data'?: string } }>;
  users?: Array<{ name: string; user: { token?: string; 'client-certificate'?: string; 'client-certificate-data'?: string; 'client-key'?: string } }>;
}

/** A request to the lab's API server (on the host) with the given credentials, verified against the lab CA. */
function apiAs(dir: string, auth: { token?: string; cert?: string; key?: string }, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  const info = controlPlaneInfo(dir)!;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1', port: Number(new URL(info.server).port), path, method, timeout: 5000,
        ca: readFileSync(join(pkiDir(dir), 'ca.crt')), cert: auth.cert, key: auth.key,
        headers: { ...(auth.token ? { authorization: `Bearer ${auth.token}` } : {}), ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end(payload);
  });
}

export type Credentials = { ok: true } | { ok: false; error: string };

/**
 * What the kubelet's client makes of kubelet.conf against the lab's API server: its CA must
 * be the lab CA (else TLS fails, "certificate signed by unknown authority") and its client
 * certificate signed by it (else the API server answers 401 Unauthorized). `server` is the
 * URL the kubelet would call, for the message.
 */
export function checkKubeletCredentials(dir: string, holder: number, url: (server: string) => string): Credentials {
  const text = readNodeFile(holder, KUBELET_CONF);
  if (text === undefined) return { ok: false, error: `stat ${KUBELET_CONF}: no such file or directory` };
  const lab = new X509Certificate(readFileSync(join(pkiDir(dir), 'ca.crt')));
  let conf: Kubeconfig;
  try {
    conf = parse(text) as Kubeconfig;
  } catch (err) {
    return { ok: false, error: `invalid kubeconfig: ${(err as Error).message}` };
  }
  const cluster = conf.clusters?.[0]?.cluster;
  const server = cluster?.server ?? '';
  const caData = cluster?.['certificate-authority-data'];
  let ca: X509Certificate | undefined;
  try {
    ca = caData ? new X509Certificate(Buffer.from(caData, 'base64')) : undefined;
  } catch {
    ca = undefined;
  }
  if (!ca || ca.fingerprint256 !== lab.fingerprint256) return { ok: false, error: `${url(server)}: tls: failed to verify certificate: x509: certificate signed by unknown authority` };
  const user = conf.users?.[0]?.user ?? {};
  const certText = user['client-certificate-data'] ? Buffer.from(user['client-certificate-data'], 'base64').toString() : user['client-certificate'] ? readNodeFile(holder, user['client-certificate']) : undefined;
  let cert: X509Certificate | undefined;
  try {
    cert = certText ? new X509Certificate(certText) : undefined;
  } catch {
    cert = undefined;
  }
  if (!cert || !cert.checkIssued(lab) || !cert.verify(lab.publicKey) || new Date(cert.validTo) < new Date()) return { ok: false, error: 'Unauthorized' };
  return { ok: true };
}

/**
 * The kubelet's TLS bootstrap (pkg/kubelet/certificate/bootstrap), done for real: a new key, a
 * CSR for system:node:<name> (O system:nodes, signer kubernetes.io/kube-apiserver-client-kubelet)
 * created with the bootstrap kubeconfig's token, the controller manager's approval and
 * signature awaited, then the client file, its link, and kubelet.conf (server and CA from the
 * bootstrap kubeconfig). Nothing else is touched. Throws the kubelet's error if it cannot.
 */
export async function tlsBootstrap(dir: string, holder: number, node: string, log: (line: string) => void): Promise<void> {
  const text = readNodeFile(holder, BOOTSTRAP_KUBELET_CONF);
  if (text === undefined) throw new LabError(`unable to load bootstrap kubeconfig: stat ${BOOTSTRAP_KUBELET_CONF}: no such file or directory`);
  const conf = parse(text) as Kubeconfig;
  const token = conf.users?.[0]?.user.token;
  const server = conf.clusters?.[0]?.cluster.server;
  const caData = conf.clusters?.[0]?.cluster['certificate-authority-data'];
  if (!token || !server || !caData) throw new LabError(`unable to load bootstrap kubeconfig: ${BOOTSTRAP_KUBELET_CONF} has no token, server or CA`);
  log(`"Using bootstrap kubeconfig to generate TLS client cert, key and kubeconfig file"`);
  const work = join(dir, 'cp', 'tmp');
  mkdirSync(work, { recursive: true });
  const base = join(work, `bootstrap-${node}-${Date.now()}`);
  let key: string;
  let csr: string;
  try {
    await run('openssl', ['req', ...EC, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/O=system:nodes/CN=system:node:${node}`]);
    key = readFileSync(`${base}.key`, 'utf8');
    csr = readFileSync(`${base}.csr`, 'utf8');
  } finally {
    rmSync(`${base}.key`, { force: true });
    rmSync(`${base}.csr`, { force: true });
  }
  const created = await apiAs(dir, { token }, 'POST', '/apis/certificates.k8s.io/v1/certificatesigningrequests', {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { generateName: 'csr-' },
    spec: { request: b64(csr), signerName: 'kubernetes.io/kube-apiserver-client-kubelet', usages: ['digital signature', 'client auth'] },
  });
  if (created.status !== 201) throw new LabError(`failed to run Kubelet: unable to request signed client certificate: ${created.status === 401 ? 'Unauthorized' : `HTTP ${created.status} ${created.body.slice(0, 200)}`}`);
  const name = (JSON.parse(created.body) as { metadata: { name: string } }).metadata.name;
  log(`"Waiting for client certificate to be issued" csr="${name}"`);
  const patience = new Patience(60_000);
  let cert: string | undefined;
  while (!patience.exhausted) {
    const got = await patience.charge(apiAs(dir, { token }, 'GET', `/apis/certificates.k8s.io/v1/certificatesigningrequests/${name}`), 5000);
    if (got.status === 200) {
      const o = JSON.parse(got.body) as { status?: { certificate?: string; conditions?: Array<{ type: string; message?: string }> } };
      const bad = o.status?.conditions?.find((c) => c.type === 'Denied' || c.type === 'Failed');
      if (bad) throw new LabError(`failed to run Kubelet: unable to request signed client certificate: certificate request was ${bad.type === 'Denied' ? 'denied' : 'not signed'}: ${bad.message ?? ''}`);
      if (o.status?.certificate) {
        cert = Buffer.from(o.status.certificate, 'base64').toString();
        break;
      }
    }
    await patience.sleep(250);
  }
  if (!cert) throw new LabError('failed to run Kubelet: unable to request signed client certificate: timed out waiting for the condition');
  writeKubeletClient(holder, cert, key);
  writeNodeFile(holder, KUBELET_CONF, kubeletKubeconfig(server, Buffer.from(caData, 'base64').toString()));
  log(`"Certificate rotation detected, shutting down client connections to start using new credentials"`);
}

// ---- The kubelet's healthz (127.0.0.1:10248 in the node), which kubeadm join waits for ----

export const KUBELET_HEALTHZ_PORT = 10248;
const healthzMarker = (dir: string, node: string) => `kmlab-kubelet ${dir} ${node} healthz`;

function healthzPids(dir: string, node: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')[0] === healthzMarker(dir, node)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

/** One healthz request on the kubelet's port: the request read to its blank line, then 200 "ok" (as the kubelet's /healthz answers). */
const HEALTHZ_REPLY = [
  '#!/bin/bash',
  "# kubemend lab: the lab kubelet's /healthz on the node's 127.0.0.1:10248 (test/lab/kubeadm-cluster.ts)",
  'while IFS= read -r line; do [ "${line%$\'\\r\'}" = "" ] && break; done',
  "printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok'",
  '',
].join('\n');

/** Serves the kubelet's /healthz ("ok") on the node's 127.0.0.1:10248 while the lab kubelet runs. */
export async function startHealthz(dir: string, node: string, holder: number): Promise<void> {
  if (healthzPids(dir, node).length) return;
  const script = join(dir, 'nodes', node, 'kubelet-healthz.sh');
  writeFileSync(script, HEALTHZ_REPLY, { mode: 0o755 });
  // nsenter stays as the parent of what it runs in the node's PID namespace: it carries the marker too.
  const child = spawn('bash', ['-c', 'exec -a "$0" nsenter -t "$1" -n -p -- bash -c \'exec -a "$0" socat "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork" "EXEC:bash $2"\' "$0" "$2" "$3"', healthzMarker(dir, node), String(holder), String(KUBELET_HEALTHZ_PORT), script], { detached: true, stdio: 'ignore', env: { PATH } });
  child.on('error', () => undefined);
  child.unref();
  for (let i = 0; i < 100; i++) {
    const ok = await run('nsenter', ['-t', String(holder), '-n', '--', 'bash', '-c', 'exec 3<>"/dev/tcp/127.0.0.1/$1"', 'kmlab-probe', String(KUBELET_HEALTHZ_PORT)]).then(() => true, () => false);
    if (ok) return;
    await sleep(20);
  }
}

export function stopHealthz(dir: string, node: string): void {
  for (const pid of healthzPids(dir, node)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

// ---- Fault: a node that kept a previous cluster's kubelet credentials ----

/**
 * Fault injection: the node's kubelet.conf and client certificate become a previous
 * cluster's (a CA of its own, its kubelet.conf naming the same server), as on a worker whose
 * cluster was re-initialised without `kubeadm reset` on it; then its kubelet restarts, as
 * `systemctl restart kubelet` does. The lab kubelet then fails as a real one does: TLS to the
 * API server fails ("x509: certificate signed by unknown authority"), it never registers or
 * reports status, and the Node goes NotReady. `kubeadm reset -f` and a fresh join fix it.
 */
export async function previousClusterCredentials(dir: string, node: string, timeoutMs = 120_000): Promise<void> {
  const holder = holderOf(dir, node);
  if (holder === undefined) throw new LabError(`no lab node ${JSON.stringify(node)} up`);
  if (!controlPlaneInfo(dir)) throw new LabError('fault kubelet-credentials: the lab has no control plane');
  const other = join(dir, 'cp', 'previous-cluster');
  if (!existsSync(join(other, 'ca.crt'))) await makeOtherCa(other);
  const text = readNodeFile(holder, KUBELET_CONF);
  const server = (text ? ((parse(text) as Kubeconfig).clusters?.[0]?.cluster.server) : undefined) ?? `https://${CONTROL_PLANE_ADDRESS}:${API_SERVER_PORT}`;
  await writeKubeletCredentials(dir, holder, node, server, other);
  // The kubelet restarts, through the lab daemon as the node's systemctl asks it.
  const control = join(dir, 'nodes', node, 'control');
  const token = Math.random().toString(16).slice(2, 14);
  const patience = new Patience(timeoutMs);
  while (existsSync(join(control, 'request')) && !patience.exhausted) await patience.sleep(100);
  writeFileSync(join(control, 'request'), `kubelet-restart ${token}\n`);
  while (!patience.exhausted) {
    if (readNodeFile(holder, '/run/kmlab/kubelet-done')?.trim() === token) return;
    await patience.sleep(100);
  }
  throw new LabError(`${node}: its kubelet did not restart within ${timeoutMs} ms`);
}

/**
 * The preflight checks of `kubeadm join` a lab node cannot pass, which the lab's kubeadm
 * (standins/kubeadm) adds to --ignore-preflight-errors; kubeadm still runs them and prints
 * each as a warning. kubemend's JoinConfiguration never ignores any.
 */
export const LAB_JOIN_IGNORED_PREFLIGHT = ['SystemVerification', 'FileContent--proc-sys-net-ipv4-ip_forward'];

/**
 * Moves the control plane's advertise address as an SRE does it by hand (seed 001's fix, the
 * parts a join sees): kube-apiserver's manifest on the control-plane node, cluster-info's
 * server in kube-public (the bootstrapsigner signs it again) and admin.conf's server there.
 * The serving certificate names both of the node's addresses already.
 */
export async function moveAdvertiseAddress(dir: string, to: string): Promise<void> {
  const info = controlPlaneInfo(dir);
  if (!info) throw new LabError('the lab has no control plane');
  const cp = labProcesses(dir).find((p) => /^kmlab-node \S+ node1$/.test(p.argv0));
  if (!cp) throw new LabError('node1 is down');
  const port = Number(new URL(info.server).port);
  const path = '/api/v1/namespaces/kube-public/configmaps/cluster-info';
  const got = await adminRequest(dir, port, 'GET', path);
  if (got.status !== 200) throw new LabError(`reading cluster-info: HTTP ${got.status}`);
  const kubeconfig = (JSON.parse(got.body) as { data: { kubeconfig: string } }).data.kubeconfig;
  const moved = kubeconfig.replace(/server: https:\/\/[^:\s]+:6443/, `server: https://${to}:${API_SERVER_PORT}`);
  const r = await adminRequest(dir, port, 'PATCH', path, { contentType: 'application/merge-patch+json', data: { data: { kubeconfig: moved } } });
  if (r.status !== 200) throw new LabError(`patching cluster-info: HTTP ${r.status} ${r.body.slice(0, 200)}`);
  for (const [file, re, line] of [
    ['/etc/kubernetes/manifests/kube-apiserver.yaml', /--advertise-address=\S+/, `--advertise-address=${to}`],
    ['/etc/kubernetes/admin.conf', /server: https:\/\/[^:\s]+:6443/, `server: https://${to}:${API_SERVER_PORT}`],
  ] as const) {
    const text = readNodeFile(cp.pid, file);
    if (text !== undefined) writeNodeFile(cp.pid, file, text.replace(re, line), file.endsWith('.conf') ? 0o600 : 0o644);
  }
}
