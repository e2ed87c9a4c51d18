/**
 * The proving ground, part 2: a real Kubernetes control plane for the lab. etcd,
 * kube-apiserver, kube-controller-manager and kube-scheduler (built from pinned modules by
 * scripts/build-k8s.sh) serve on 127.0.0.1 with a lab CA and RBAC; kwok plays the lab
 * nodes' kubelets: it keeps their Node objects Ready and heartbeating, moves pods through
 * their phases and finishes deletions.
 *
 * Every process carries the marker "kmlab-cp <dir> <component>" in argv[0], so the lab's
 * `down` stops it with the nodes; its data (etcd, certificates, kubeconfigs, logs) lives
 * in <dir>/cp and goes with the lab directory.
 *
 * A node's kubelet runs when the node is up and joined: the label KUBELET_LABEL=running is
 * what makes kwok heartbeat it. A reboot, `kubeadm reset` or a kubelet that cannot reach the
 * API server (kubelet.ts) sets it to "stopped", and the
 * node lifecycle controller then marks the Node NotReady after its grace period, as it
 * would for a real kubelet that went quiet.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { KubeConfig, KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { REPO_ROOT, TOOLS_BIN } from '../../worker/paths';
import { CONTROL_PLANE_NODE_IPS, kubeadmInit } from './kubeadm-cluster';
import { Patience } from './patience';
import { freeLowPorts } from './sshd';
import { APP_NAMESPACE, CALICO_NODE_DAEMONSET, type ClusterObjects, FLANNEL_DAEMONSET, FLANNEL_NAMESPACE, KUBELET_LABEL, LAB_KUBELET_POD_LABEL, labObjects, labRunsCalicoNode, WORKER_USER } from './manifests';

export { KUBELET_LABEL } from './manifests';
import type { LabState } from './lab';

export const CONTROL_PLANE_BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok'] as const;

/** How long the node lifecycle controller waits for a quiet kubelet before NotReady. */
export const NODE_MONITOR_GRACE_S = 20;
/** kwok renews each node's Lease at a quarter of this, as a kubelet does. */
const NODE_LEASE_S = 20;

export class ControlPlaneError extends Error {}

export interface ControlPlaneInfo {
  /** https://127.0.0.1:<port> */
  server: string;
  /** system:masters: for the lab and for SREs poking at it. */
  adminKubeconfig: string;
  /** The identity kubemend's worker uses in the lab, bound to deploy/rbac.yaml's ClusterRole only. */
  workerKubeconfig: string;
}

const cpDir = (dir: string) => join(dir, 'cp');
const cpMarker = (dir: string, component: string) => `kmlab-cp ${dir} ${component}`;

/** The control plane's files, when the lab has one (written before any process starts). */
export function controlPlaneInfo(dir: string): ControlPlaneInfo | undefined {
  const path = join(cpDir(dir), 'info.json');
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as ControlPlaneInfo) : undefined;
}

/** Refuses before anything starts when a binary is not built. */
export function requireBinaries(): void {
  const missing = CONTROL_PLANE_BINARIES.filter((b) => !existsSync(join(TOOLS_BIN, b)));
  if (missing.length) throw new ControlPlaneError(`missing ${missing.join(', ')} in ${TOOLS_BIN}: run \`bash scripts/build-k8s.sh\` (or \`npm run setup\`), or bring the lab up with --no-control-plane`);
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new ControlPlaneError(`openssl ${args.join(' ')}: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`);
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/**
 * A CA, the API server's serving certificate, client certificates and the service-account key
 * pair. The serving certificate names the control-plane node's addresses too, as kubeadm's
 * does: nodes reach the API server on <address>:6443 (kubeadm-cluster.ts).
 */
function makePki(pki: string): void {
  mkdirSync(pki, { recursive: true });
  openssl(['req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30', '-subj', '/CN=kubemend-lab-ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], pki);
  const sign = (name: string, subject: string, ext: string) => {
    writeFileSync(join(pki, `${name}.ext`), ext);
    openssl(['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], pki);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '30', '-out', `${name}.crt`, '-extfile', `${name}.ext`], pki);
  };
  const san = ['IP:127.0.0.1', 'IP:10.96.0.1', ...CONTROL_PLANE_NODE_IPS.map((ip) => `IP:${ip}`), 'DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local'];
  sign('apiserver', '/CN=kube-apiserver', `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san.join(',')}\n`);
  const client = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n';
  for (const [name, subject] of Object.entries(CLIENTS)) sign(name, subject, client);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', 'sa.key'], pki);
  openssl(['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], pki);
}

/** Client identities: the subject's O is the group RBAC sees, CN the user. */
const CLIENTS = {
  admin: '/O=system:masters/CN=kubernetes-admin',
  worker: `/CN=${WORKER_USER}`,
  'controller-manager': '/CN=system:kube-controller-manager',
  scheduler: '/CN=system:kube-scheduler',
  kwok: '/O=system:masters/CN=kwok-controller',
};

function writeKubeconfig(path: string, server: string, pki: string, user: keyof typeof CLIENTS): void {
  const b64 = (f: string) => readFileSync(join(pki, f)).toString('base64');
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'kubemend-lab', cluster: { server, 'certificate-authority-data': b64('ca.crt') } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(`${user}.crt`), 'client-key-data': b64(`${user}.key`) } }],
    contexts: [{ name: `${user}@kubemend-lab`, context: { cluster: 'kubemend-lab', user } }],
    'current-context': `${user}@kubemend-lab`,
  };
  writeFileSync(path, `# Written by the kubemend lab; it holds a private key.\n${stringify(config)}`, { mode: 0o600 });
}

function startComponent(dir: string, component: string, args: string[]): ChildProcess {
  const log = openSync(join(cpDir(dir), `${component}.log`), 'a');
  const child = spawn('bash', ['-c', 'exec -a "$1" "$2" "${@:3}"', 'kmlab-cp', cpMarker(dir, component), join(TOOLS_BIN, component), ...args], { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.unref();
  return child;
}

/** A request over TLS with the admin's certificate; resolves with the status code and body (0 if unreachable). */
export function adminRequest(dir: string, port: number, method: string, path: string, body?: { contentType: string; data: unknown }): Promise<{ status: number; body: string }> {
  const pki = join(cpDir(dir), 'pki');
  const payload = body ? JSON.stringify(body.data) : undefined;
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1', port, path, method, timeout: 5000,
        ca: readFileSync(join(pki, 'ca.crt')), cert: readFileSync(join(pki, 'admin.crt')), key: readFileSync(join(pki, 'admin.key')),
        headers: body ? { 'content-type': body.contentType, 'content-length': Buffer.byteLength(payload!) } : {},
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

/** A probe is charged at most this much of a wait's deadline (its own HTTP requests time out after 5 s). */
const PROBE_CAP_MS = 5000;

async function until<T>(what: string | (() => string), timeoutMs: number, probe: () => Promise<T | undefined>, log?: string): Promise<T> {
  // Time waited, not wall time: a loop blocked by other work does not use up the deadline.
  const patience = new Patience(timeoutMs);
  while (!patience.exhausted) {
    const v = await patience.charge(probe(), PROBE_CAP_MS);
    if (v !== undefined) return v;
    await patience.sleep(200);
  }
  const tail = log && existsSync(log) ? `\n--- ${log} (last lines) ---\n${readFileSync(log, 'utf8').split('\n').slice(-15).join('\n')}` : '';
  throw new ControlPlaneError(`${typeof what === 'function' ? what() : what} within ${timeoutMs} ms${tail}`);
}

/** Admin API client for the lab (the lab's own writes: Nodes, workloads, kubelet labels). */
export function adminApi(dir: string): KubernetesObjectApi {
  const info = controlPlaneInfo(dir);
  if (!info) throw new ControlPlaneError('the lab has no control plane');
  const kc = new KubeConfig();
  kc.loadFromFile(info.adminKubeconfig);
  return KubernetesObjectApi.makeApiClient(kc);
}

/** Creates objects in order; a CRD is waited on until Established before what follows uses it. */
async function createAll(api: KubernetesObjectApi, objects: KubernetesObject[]): Promise<void> {
  for (const obj of objects) {
    try {
      await api.create(obj);
    } catch (err) {
      throw new ControlPlaneError(`creating ${obj.kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name}: ${(err as Error).message}`);
    }
    if (obj.kind === 'CustomResourceDefinition') {
      await until(`CRD ${obj.metadata?.name} established`, 20_000, async () => {
        const crd = (await api.read({ apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name: obj.metadata!.name! } })) as { status?: { conditions?: Array<{ type: string; status: string }> } };
        return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ? true : undefined;
      });
    }
  }
}

export function readManifest(path: string): KubernetesObject[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((d) => d.toJSON() as KubernetesObject | null)
    .filter((o): o is KubernetesObject => !!o);
}

/**
 * Starts the control plane for a lab whose nodes are up, registers the nodes and installs
 * the seeds' workloads, and returns once every Node is Ready and every Deployment has its
 * replicas available. Nothing listens beyond 127.0.0.1.
 */
export async function startControlPlane(state: LabState): Promise<ControlPlaneInfo> {
  requireBinaries();
  const { dir } = state;
  const cp = cpDir(dir);
  const pki = join(cp, 'pki');
  mkdirSync(join(cp, 'etcd'), { recursive: true, mode: 0o700 });
  makePki(pki);
  const [etcdClient, etcdPeer, apiPort, kwokPort] = await freeLowPorts(4);
  const server = `https://127.0.0.1:${apiPort}`;
  const info: ControlPlaneInfo = { server, adminKubeconfig: join(dir, 'admin.kubeconfig'), workerKubeconfig: join(dir, 'worker.kubeconfig') };
  writeKubeconfig(info.adminKubeconfig, server, pki, 'admin');
  writeKubeconfig(info.workerKubeconfig, server, pki, 'worker');
  for (const c of ['controller-manager', 'scheduler', 'kwok'] as const) writeKubeconfig(join(cp, `${c}.kubeconfig`), server, pki, c);
  writeFileSync(join(cp, 'info.json'), `${JSON.stringify(info, null, 2)}\n`);

  const etcdUrl = `http://127.0.0.1:${etcdClient}`;
  startComponent(dir, 'etcd', [
    '--name=lab', `--data-dir=${join(cp, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-cluster=lab=http://127.0.0.1:${etcdPeer}`,
    '--listen-metrics-urls=', '--unsafe-no-fsync', '--log-level=warn',
  ]);
  await until('etcd answering /health', 20_000, async () => ((await httpGet(`${etcdUrl}/health`)).includes('"health":"true"') ? true : undefined), join(cp, 'etcd.log'));

  startComponent(dir, 'kube-apiserver', [
    `--etcd-servers=${etcdUrl}`, '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
    `--tls-cert-file=${join(pki, 'apiserver.crt')}`, `--tls-private-key-file=${join(pki, 'apiserver.key')}`, `--client-ca-file=${join(pki, 'ca.crt')}`,
    `--service-account-key-file=${join(pki, 'sa.pub')}`, `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local', '--service-cluster-ip-range=10.96.0.0/12',
    '--authorization-mode=Node,RBAC', '--allow-privileged=true', '--enable-admission-plugins=NodeRestriction',
    '--enable-bootstrap-token-auth', // kubeadm's: joining nodes authenticate with bootstrap tokens
    '--profiling=false', '--v=1',
  ]);
  await until('kube-apiserver ready (/readyz)', 60_000, async () => ((await adminRequest(dir, apiPort, 'GET', '/readyz')).status === 200 ? true : undefined), join(cp, 'kube-apiserver.log'));

  const cmKubeconfig = join(cp, 'controller-manager.kubeconfig');
  startComponent(dir, 'kube-controller-manager', [
    `--kubeconfig=${cmKubeconfig}`, `--authentication-kubeconfig=${cmKubeconfig}`, `--authorization-kubeconfig=${cmKubeconfig}`,
    '--bind-address=127.0.0.1', '--secure-port=0', '--leader-elect=false', '--use-service-account-credentials=true',
    `--service-account-private-key-file=${join(pki, 'sa.key')}`, `--root-ca-file=${join(pki, 'ca.crt')}`,
    '--cluster-name=kubemend-lab', '--allocate-node-cidrs=false',
    // As kubeadm's manifest: the token controllers (off in "*") sign cluster-info and remove
    // expired tokens; csrsigning signs the kubelets' client certificates with the lab CA.
    '--controllers=*,bootstrapsigner,tokencleaner',
    `--cluster-signing-cert-file=${join(pki, 'ca.crt')}`, `--cluster-signing-key-file=${join(pki, 'ca.key')}`,
    `--node-monitor-grace-period=${NODE_MONITOR_GRACE_S}s`, '--node-monitor-period=2s', '--profiling=false', '--v=1',
  ]);
  const schedKubeconfig = join(cp, 'scheduler.kubeconfig');
  startComponent(dir, 'kube-scheduler', [
    `--kubeconfig=${schedKubeconfig}`, `--authentication-kubeconfig=${schedKubeconfig}`, `--authorization-kubeconfig=${schedKubeconfig}`,
    '--bind-address=127.0.0.1', '--secure-port=0', '--leader-elect=false', '--profiling=false', '--v=1',
  ]);
  startComponent(dir, 'kwok', [
    `--kubeconfig=${join(cp, 'kwok.kubeconfig')}`, '--manage-all-nodes=false', `--manage-nodes-with-label-selector=${KUBELET_LABEL}=running`,
    `--node-lease-duration-seconds=${NODE_LEASE_S}`, `--server-address=127.0.0.1:${kwokPort}`, '--v=WARN',
    // Pods the lab's own kubelets run carry LAB_KUBELET_POD_LABEL, and kwok must leave them alone: its
    // pod-ready stage would mark each new one Running and Ready the moment it is bound (kwok then
    // ignores them wholly, deletion included). With --real-flannel: kube-flannel's pods (the real
    // flanneld, flannel-kubelet.ts) and the Deployments' pods (real sandboxes, pod-kubelet.ts).
    // orphan-calico: seed 004's pods (pod-kubelet.ts, Calico addresses). nat-advertise, nat-node-ip:
    // calico-node's pods (calico-node.ts).
    ...(state.realFlannel || state.scenarios.includes('orphan-calico') || labRunsCalicoNode(state.scenarios) ? [`--disregard-status-with-label-selector=${LAB_KUBELET_POD_LABEL.key}=${LAB_KUBELET_POD_LABEL.value}`] : []),
  ]);

  // What kubeadm init leaves, for the real kubeadm on the nodes (kubeadm-cluster.ts).
  await kubeadmInit(state);
  const api = adminApi(dir);
  const objects: ClusterObjects = labObjects(state, readManifest(join(REPO_ROOT, 'deploy', 'rbac.yaml')), readManifest(join(REPO_ROOT, 'test', 'lab', 'manifests', 'calico-crds.yaml')));
  await createAll(api, objects.setup);
  await createAll(api, objects.nodes);
  const registered = objects.nodes.map((n) => n.metadata!.name!);
  await waitForNodesReady(dir, registered, 60_000);
  // Pods are refused until the service-account controller has made their namespace's "default" account.
  const namespaces = [...new Set(objects.workloads.map((o) => o.metadata?.namespace).filter((n): n is string => !!n))];
  await until(`service accounts "default" in ${namespaces.join(', ')}`, 30_000, async () => {
    const sas = (await api.list('v1', 'ServiceAccount')) as unknown as { items: Array<{ metadata: { name: string; namespace: string } }> };
    const have = new Set(sas.items.filter((a) => a.metadata.name === 'default').map((a) => a.metadata.namespace));
    return namespaces.every((n) => have.has(n)) ? true : undefined;
  }, join(cp, 'kube-controller-manager.log'));
  await createAll(api, objects.workloads);
  // Apps cannot be placed while workers are missing (seed 001): wait for the system's part then.
  // kube-flannel's pods, with --real-flannel, wait for the lab daemon's kubelet, which starts after this.
  // calico-node's pods, under nat-*, wait for the lab daemon's kubelet too (calico-node.ts).
  // With --real-flannel, so do the Deployments' pods (real sandboxes, pod-kubelet.ts): up waits for them later.
  const labRun = [...(state.realFlannel ? [`${FLANNEL_NAMESPACE}/${FLANNEL_DAEMONSET}`, 'kube-system/coredns', `${APP_NAMESPACE}/web`] : []), ...(labRunsCalicoNode(state.scenarios) ? [`kube-system/${CALICO_NODE_DAEMONSET}`] : [])];
  await waitForWorkloads(dir, 90_000, registered.length === state.nodes.length ? undefined : ['kube-system', FLANNEL_NAMESPACE], labRun);
  return info;
}

function httpGet(url: string): Promise<string> {
  return fetch(url, { signal: AbortSignal.timeout(2000) })
    .then((r) => r.text())
    .catch(() => '');
}

interface NodeLike {
  metadata: { name: string };
  status?: { conditions?: Array<{ type: string; status: string }> };
}

export async function waitForNodesReady(dir: string, names: string[], timeoutMs: number): Promise<void> {
  const api = adminApi(dir);
  await until(`nodes ${names.join(', ')} Ready`, timeoutMs, async () => {
    const list = (await api.list('v1', 'Node')) as unknown as { items: NodeLike[] };
    const ready = new Set(list.items.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).map((n) => n.metadata.name));
    return names.every((n) => ready.has(n)) ? true : undefined;
  }, join(cpDir(dir), 'kwok.log'));
}

/** Every Deployment has all replicas available and every DaemonSet all pods ready (but those in `skip`, as namespace/name). */
async function waitForWorkloads(dir: string, timeoutMs: number, namespaces?: string[], skip: string[] = []): Promise<void> {
  const api = adminApi(dir);
  type Workload = { metadata: { namespace: string; name: string }; spec: { replicas?: number }; status?: { availableReplicas?: number; desiredNumberScheduled?: number; numberReady?: number } };
  let waitingFor = '';
  await until(() => `workloads ready (still waiting for ${waitingFor || 'the first list'})`, timeoutMs, async () => {
    const within = (w: Workload) => (!namespaces || namespaces.includes(w.metadata.namespace)) && !skip.includes(`${w.metadata.namespace}/${w.metadata.name}`);
    const deps = ((await api.list('apps/v1', 'Deployment')) as unknown as { items: Workload[] }).items.filter(within);
    const dss = ((await api.list('apps/v1', 'DaemonSet')) as unknown as { items: Workload[] }).items.filter(within);
    const pending = [
      ...deps.filter((d) => (d.status?.availableReplicas ?? 0) < (d.spec.replicas ?? 1)).map((d) => `deployment ${d.metadata.namespace}/${d.metadata.name}`),
      ...dss.filter((d) => !d.status?.desiredNumberScheduled || (d.status.numberReady ?? 0) < d.status.desiredNumberScheduled).map((d) => `daemonset ${d.metadata.namespace}/${d.metadata.name}`),
    ];
    waitingFor = pending.join(', ');
    return pending.length === 0 ? true : undefined;
  }, join(cpDir(dir), 'kube-controller-manager.log'));
}

/**
 * Whether the node's kubelet runs: kwok heartbeats the Node while its label says so. The lab
 * daemon calls this around reboots and for `kubeadm reset`/`join` on a node. A kubelet that
 * starts reports the node's machine and boot ids, as a real one does.
 */
export async function setKubelet(dir: string, node: string, running: boolean, ids?: { machineId: string; bootId: string }): Promise<void> {
  const info = controlPlaneInfo(dir);
  if (!info) return;
  const port = Number(new URL(info.server).port);
  const merge = (path: string, data: unknown) => adminRequest(dir, port, 'PATCH', path, { contentType: 'application/merge-patch+json', data });
  const check = (what: string, r: { status: number; body: string }) => {
    if (r.status !== 200) throw new ControlPlaneError(`${what} of Node ${node}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  };
  if (running && ids) check('status patch', await merge(`/api/v1/nodes/${encodeURIComponent(node)}/status`, { status: { nodeInfo: { machineID: ids.machineId, bootID: ids.bootId } } }));
  check('label patch', await merge(`/api/v1/nodes/${encodeURIComponent(node)}`, { metadata: { labels: { [KUBELET_LABEL]: running ? 'running' : 'stopped' } } }));
}
