/** The lab's crictl runp/inspectp/stopp/rmp, its pure parts: the command line, the pod config, crictl's output. */
import { CniPluginError, containerLine, parseRecordLine, recordLine, type SandboxRecord } from '../lab/cni';
import { cniFailure, CriConfigError, CrictlNotSimulated, fatalLine, goJson, goQuote, inspectpJson, klogError, parseCrictlArgs, parsePodSandboxConfig, resolveSandbox } from '../lab/cri';

const PROBE = { metadata: { name: 'kubemend-probe', namespace: 'default', uid: 'c3d1a0e2-5b7f-4e8a-9c61-2f0e8d4b7a13', attempt: 1 }, log_directory: '/tmp', linux: {} };

describe('the pod config (crictl runp <file>)', () => {
  test("crictl's own example and kubemend's probe are taken; a missing uid is left for crictl to make", () => {
    expect(parsePodSandboxConfig(JSON.stringify(PROBE))).toEqual(PROBE);
    expect(parsePodSandboxConfig('{"metadata":{"name":"nginx-sandbox","namespace":"default"}}')).toEqual({ metadata: { name: 'nginx-sandbox', namespace: 'default', uid: '', attempt: 0 } });
    const full = {
      ...PROBE,
      hostname: 'probe',
      dns_config: { servers: ['10.96.0.10'], searches: ['default.svc.cluster.local'], options: ['ndots:5'] },
      port_mappings: [],
      labels: { app: 'kubemend' },
      annotations: { 'kubemend.io/run': 'r1' },
      linux: { cgroup_parent: 'system.slice', sysctls: { 'net.ipv4.ip_forward': '1' }, security_context: { namespace_options: { network: 0, pid: 1, ipc: 0, target_id: '' } } },
    };
    expect(parsePodSandboxConfig(JSON.stringify(full))).toEqual(full);
    // null is absent, as Go's decoder leaves a field it gets null for.
    expect(parsePodSandboxConfig('{"metadata":{"name":"a","namespace":"b","uid":null},"linux":null}')).toEqual({ metadata: { name: 'a', namespace: 'b', uid: '', attempt: 0 } });
  });

  test.each([
    ['not JSON', 'metadata: {name: x}', /^not JSON \(.*\); the kubemend lab's crictl reads JSON pod configs only$/],
    ['an array', '[]', /^a pod config is a JSON object, got an array$/],
    ['no metadata', '{"linux":{}}', /^metadata is not set$/],
    ['no namespace', '{"metadata":{"name":"web"}}', /^name or namespace is not in metadata \{"name":"web"\}$/],
    ['an empty name', '{"metadata":{"name":"","namespace":"default"}}', /^name or namespace is not in metadata /],
    ['a name that is no DNS-1123 subdomain', '{"metadata":{"name":"Web;rm -rf /","namespace":"default"}}', /^metadata\.name "Web;rm -rf \/": the kubemend lab takes a DNS-1123 subdomain/],
    ['a CNI_ARGS injection in the namespace', '{"metadata":{"name":"web","namespace":"default;K8S_POD_NAME=x"}}', /^metadata\.namespace .*DNS-1123 label/],
    ['a uid with a space', '{"metadata":{"name":"web","namespace":"default","uid":"a b"}}', /^metadata\.uid "a b": /],
    ['a string attempt', '{"metadata":{"name":"web","namespace":"default","attempt":"1"}}', /^metadata\.attempt: want an integer from 0 to 4294967295, got a string "1"$/],
    ['a negative attempt', '{"metadata":{"name":"web","namespace":"default","attempt":-1}}', /^metadata\.attempt: want an integer/],
    ['a camelCase field', '{"metadata":{"name":"web","namespace":"default"},"logDirectory":"/tmp"}', /^unknown field "logDirectory" \(real crictl drops unknown fields silently; the kubemend lab refuses them; fields are snake_case/],
    ['an unknown field deep down', '{"metadata":{"name":"web","namespace":"default"},"linux":{"security_context":{"namespace_options":{"net":2}}}}', /^unknown field "linux\.security_context\.namespace_options\.net"/],
    ['host network', '{"metadata":{"name":"web","namespace":"default"},"linux":{"security_context":{"namespace_options":{"network":2}}}}', /network: only POD \(0\) is simulated.*NODE, 2/],
    ['host ports', '{"metadata":{"name":"web","namespace":"default"},"port_mappings":[{"container_port":80,"host_port":8080}]}', /^port_mappings: host ports are not simulated/],
    ['a privileged sandbox', '{"metadata":{"name":"web","namespace":"default"},"linux":{"security_context":{"privileged":true}}}', /^linux\.security_context\.privileged: sandbox security settings are not simulated/],
    ['a label that is not a string', '{"metadata":{"name":"web","namespace":"default"},"labels":{"a":1}}', /^labels\["a"\]: want a string, got number 1$/],
    ['metadata as a string', '{"metadata":"web"}', /^metadata: want an object, got a string "web"$/],
  ])('refused with what is wrong: %s', (_what, text, message) => {
    expect(() => parsePodSandboxConfig(text)).toThrow(CriConfigError);
    expect(() => parsePodSandboxConfig(text)).toThrow(message);
  });

  test('a config larger than 64 KiB is refused before it is parsed', () => {
    expect(() => parsePodSandboxConfig(JSON.stringify({ ...PROBE, annotations: { a: 'x'.repeat(70_000) } }))).toThrow('larger than 65536 bytes');
  });
});

describe("crictl's command line", () => {
  test.each([
    [['runp', '/tmp/kubemend-probe.json'], { op: 'runp', file: '/tmp/kubemend-probe.json' }],
    [['runp', '--', '-odd-name.json'], { op: 'runp', file: '-odd-name.json' }],
    [['inspectp', '--output', 'json', 'abc'], { op: 'inspectp', id: 'abc' }],
    [['inspectp', '-o', 'json', 'abc'], { op: 'inspectp', id: 'abc' }],
    [['inspectp', '--output=json', 'abc'], { op: 'inspectp', id: 'abc' }],
    [['inspectp', '-o=json', '-q', 'abc'], { op: 'inspectp', id: 'abc' }],
    [['inspectp', 'abc'], { op: 'inspectp', id: 'abc' }], // crictl's default output for inspectp is JSON
    [['stopp', 'abc'], { op: 'stopp', id: 'abc' }],
    [['rmp', 'abc'], { op: 'rmp', id: 'abc', force: false }],
    [['rmp', '-f', 'abc'], { op: 'rmp', id: 'abc', force: true }],
    [['rmp', '--force', 'abc'], { op: 'rmp', id: 'abc', force: true }],
  ])('%j', (argv, call) => expect(parseCrictlArgs(argv)).toEqual(call));

  test("a wrong number of arguments shows crictl's help (exit 0, as crictl's ShowSubcommandHelp)", () => {
    for (const argv of [['runp'], ['runp', 'a.json', 'b.json'], ['stopp'], ['rmp', '-f']]) expect(parseCrictlArgs(argv)).toMatchObject({ op: 'help', text: expect.stringContaining(`crictl ${argv[0]} - `) });
  });

  test('what the lab does not simulate is named', () => {
    for (const [argv, message] of [
      [['inspectp', '-o', 'yaml', 'abc'], 'simulates inspectp --output json only'],
      [['inspectp'], 'inspectp of one POD-ID'],
      [['stopp', 'a', 'b'], 'stopp of one POD-ID at a time, got 2'],
      [['rmp', '-a'], 'does not simulate option -a'],
      [['runp', '--runtime', 'runc', 'p.json'], 'does not simulate option --runtime'],
      [['inspectp', '-o'], 'flag needs an argument: -o'],
      [['create', 'x'], 'not "create"'],
    ] as const) {
      expect(() => parseCrictlArgs(argv)).toThrow(CrictlNotSimulated);
      expect(() => parseCrictlArgs(argv)).toThrow(message);
    }
  });

  test('flags after the first argument are arguments, as Go flag parsing stops there', () => {
    expect(() => parseCrictlArgs(['inspectp', 'abc', '-o', 'json'])).toThrow('one POD-ID at a time, got 3');
  });
});

describe("crictl's output", () => {
  const at = new Date(2026, 0, 14, 9, 50, 18, 822).getTime();

  test("Go's quoting, as klog and logrus write values", () => {
    expect(goQuote('failed to setup network for sandbox "ab": x\ny\\')).toBe('"failed to setup network for sandbox \\"ab\\": x\\ny\\\\"');
    expect(goQuote('\x01é')).toBe('"\\x01é"');
  });

  test("cri-client's klog error line and crictl's fatal line, on a terminal and not", () => {
    expect(klogError(at, 21200, 'RunPodSandbox from runtime service failed', 'rpc error: code = Unknown desc = a "b"')).toBe('E0114 09:50:18.822000   21200 log.go:32] "RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = a \\"b\\""\n');
    expect(klogError(at, 7, 'StopPodSandbox from runtime service failed', 'e', { podSandboxID: 'abc' })).toMatch(/ {6}7 log\.go:32\] "StopPodSandbox from runtime service failed" err="e" podSandboxID="abc"\n$/);
    expect(fatalLine(at, 1500, true, 'run pod sandbox: x')).toBe(`\x1b[31mFATA\x1b[0m[0001] ${'run pod sandbox: x'.padEnd(44)} \n`);
    expect(fatalLine(at, 0, false, 'run pod sandbox: "x"')).toMatch(/^time="2026-01-14T09:50:18(Z|[+-]\d\d:\d\d)" level=fatal msg="run pod sandbox: \\"x\\""\n$/);
  });

  test("libcni's words for a plugin failure name the config entry the runtime ran", () => {
    const full = new CniPluginError('bridge', 'ADD', 11, 'failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254');
    expect(cniFailure(full.of({ type: 'flannel' }), 'add')).toBe('plugin type="flannel" failed (add): failed to allocate for range 0: no IP addresses available in range set: 10.244.0.1-10.244.0.254');
    expect(cniFailure(new CniPluginError('loopback', 'DEL', 7, 'x', 'why').of({ type: 'loopback', name: 'cni-loopback' }), 'delete')).toBe('plugin type="loopback" name="cni-loopback" failed (delete): x; why');
    expect(cniFailure(new Error('no network config found in /etc/cni/net.d'), 'add')).toBe('no network config found in /etc/cni/net.d');
  });

  test('inspectp -o json: crictl sorts every key; status is CRI PodSandboxStatus with its defaults, info the config', () => {
    const r: SandboxRecord = { id: 'a'.repeat(64), pod: { name: 'kubemend-probe', namespace: 'default' }, netns: '/var/run/netns/cni-x', state: 'SANDBOX_READY', uid: PROBE.metadata.uid, attempt: 1, createdAtMs: at, ip: '10.244.1.5' };
    const out = inspectpJson(r, { ...PROBE, labels: { app: 'kubemend' } });
    expect(out.endsWith('}\n')).toBe(true);
    const doc = JSON.parse(out);
    expect(Object.keys(doc)).toEqual(['info', 'status']);
    expect(Object.keys(doc.status)).toEqual(['annotations', 'createdAt', 'id', 'labels', 'linux', 'metadata', 'network', 'runtimeHandler', 'state']);
    expect(doc.status).toMatchObject({ id: r.id, state: 'SANDBOX_READY', metadata: { attempt: 1, name: 'kubemend-probe', namespace: 'default', uid: PROBE.metadata.uid }, network: { additionalIps: [], ip: '10.244.1.5' }, linux: { namespaces: {} }, labels: { app: 'kubemend' }, annotations: {}, runtimeHandler: '' });
    expect(doc.status.createdAt).toMatch(/^2026-01-14T09:50:18\.822(Z|[+-]\d\d:\d\d)$/);
    // containerd's info carries the config as Go's omitempty marshals it: no empty linux fields dropped, a zero attempt would be.
    // ...and the pause container's runtime spec, of which the lab has the namespaces: the network one names the sandbox's netns.
    expect(doc.info).toEqual({
      config: { ...PROBE, labels: { app: 'kubemend' } },
      netNamespaceClosed: false,
      runtimeSpec: { linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/var/run/netns/cni-x' }] } },
    });
    expect(Object.keys(doc.info)).toEqual(['config', 'netNamespaceClosed', 'runtimeSpec']);
    expect(out).toContain('{\n            "path": "/var/run/netns/cni-x",\n            "type": "network"\n          }');
    expect(out).toContain('\n  "status": {\n    "annotations": {},\n');
    const stopped = JSON.parse(inspectpJson({ ...r, state: 'SANDBOX_NOTREADY', attempt: 0 }, { ...PROBE, metadata: { ...PROBE.metadata, attempt: 0 } }));
    expect(stopped.status).toMatchObject({ state: 'SANDBOX_NOTREADY', network: { additionalIps: [], ip: '' }, metadata: { attempt: 0 } });
    expect(stopped.info.config.metadata).toEqual({ name: 'kubemend-probe', namespace: 'default', uid: PROBE.metadata.uid });
    expect(stopped.info.netNamespaceClosed).toBe(true);
    expect(stopped.info.runtimeSpec.linux.namespaces).toContainEqual({ type: 'network', path: '/var/run/netns/cni-x' }); // the spec keeps its path once the netns is closed
    expect(JSON.parse(inspectpJson(r, undefined)).info).toEqual({ netNamespaceClosed: false, runtimeSpec: expect.objectContaining({ linux: expect.anything() }) }); // a sandbox the lab made itself: no config
  });

  test("Go's encoding/json escapes HTML characters", () => {
    expect(goJson({ b: '<a&b>', a: [] })).toBe('{\n  "a": [],\n  "b": "\\u003ca\\u0026b\\u003e"\n}');
  });
});

test("sandbox ids resolve as containerd's store does: the whole id or a unique prefix", () => {
  const rec = (id: string) => parseRecordLine(`pod ${id} web default SANDBOX_READY`)!;
  const records = [rec(`ab${'1'.repeat(62)}`), rec(`ac${'2'.repeat(62)}`)];
  expect(resolveSandbox(records, records[0].id)).toBe(records[0]);
  expect(resolveSandbox(records, 'ab')).toBe(records[0]);
  expect(resolveSandbox(records, 'a')).toBe('ambiguous');
  expect(resolveSandbox(records, 'ff')).toBe('not found');
  expect(resolveSandbox(records, '')).toBe('not found');
});

test("the runtime's record line: the lab's five fields, or crictl's metadata after them", () => {
  const id = 'f'.repeat(64);
  expect(parseRecordLine(`pod ${id} app-node1-1 default SANDBOX_READY`)).toEqual({ id, pod: { name: 'app-node1-1', namespace: 'default' }, netns: '/var/run/netns/cni-ffffffff-ffff-ffff-ffff-ffffffffffff', state: 'SANDBOX_READY', uid: '', attempt: 0, ip: '' });
  const r = parseRecordLine(`pod ${id} probe default SANDBOX_READY u-1 2 1768384218822 10.244.1.5`)!;
  expect(r).toMatchObject({ uid: 'u-1', attempt: 2, createdAtMs: 1768384218822, ip: '10.244.1.5' });
  expect(recordLine(r)).toBe(`pod ${id} probe default SANDBOX_READY u-1 2 1768384218822 10.244.1.5`);
  expect(recordLine({ ...r, state: 'SANDBOX_NOTREADY', ip: '' })).toBe(`pod ${id} probe default SANDBOX_NOTREADY u-1 2 1768384218822 -`);
  expect(parseRecordLine(`container ${id} x`)).toBeUndefined();
  expect(() => recordLine({ ...r, uid: 'a b' })).toThrow('refusing "a b" in a runtime record');
  // The lab's kubelet marks its own sandboxes; any other tenth word is not an owner.
  const own = parseRecordLine(`pod ${id} web-1 demo SANDBOX_READY u-2 0 1768384218822 10.244.1.6 kubelet`)!;
  expect(own.owner).toBe('kubelet');
  expect(recordLine(own)).toBe(`pod ${id} web-1 demo SANDBOX_READY u-2 0 1768384218822 10.244.1.6 kubelet`);
  expect(parseRecordLine(`pod ${id} web-1 demo SANDBOX_READY u-2 0 1768384218822 10.244.1.6 someone`)!.owner).toBeUndefined();
  expect(r.owner).toBeUndefined();
});

test("a container line for a sandbox: a fresh 64-hex id, the sandbox's, the container's and the pod's names, running; a name crictl's awk would split is refused", () => {
  const sandbox = { id: 'a'.repeat(64), pod: { name: 'web-1', namespace: 'demo' } };
  const line = containerLine(sandbox, 'web');
  expect(line).toMatch(new RegExp(`^container [0-9a-f]{64} ${'a'.repeat(64)} web web-1 CONTAINER_RUNNING\n$`));
  expect(containerLine(sandbox, 'web')).not.toBe(line);
  expect(() => containerLine(sandbox, 'web app')).toThrow('refusing container name "web app"');
});
