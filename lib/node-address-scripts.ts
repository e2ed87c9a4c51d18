/**
 * node-address's node commands (seed 001): the verify-then-act rewrite of one kubelet
 * argument line, and its undo, as constant scripts. The variable parts (the file, the
 * variable, the line as the plan read it, the new line, the backup directory) are arguments,
 * validated here and quoted by lib/shell.ts: never pasted into a script.
 */
import { backupDir, isIpv4, isKubeletFile, KUBELET_FILES, type KubeletFile, nodeIpFlag, parseArgsLine } from './node-address';

/**
 * Sets the line `$2=...` of file $1 to $4, only if its last such line is still $3 ("" = the
 * file has none). The file is copied to $5 first, once: a retry never overwrites the copy of
 * the original. Written to a temporary file beside it and renamed, with the original's mode
 * and owner. Prints one line:
 *  - `already`: the line is $4 (done before);
 *  - `written`: it was $3 and is now $4;
 *  - `differs <line>`: it is something else: nothing was changed.
 * Exit 3: a write failed (its words on stderr).
 */
export const SET_ARGS_LINE_SCRIPT = [
  'set -u',
  'f=$1; var=$2; want=$3; new=$4; bdir=$5',
  'cur=$(grep -E "^[[:space:]]*$var=" "$f" 2>/dev/null | tail -n 1)',
  'if [ "$cur" = "$new" ]; then echo already; exit 0; fi',
  'if [ "$cur" != "$want" ]; then printf "differs %s\\n" "$cur"; exit 0; fi',
  'b="$bdir/$(printf "%s" "$f" | tr / _)"',
  'mkdir -p "$bdir" || exit 3',
  'if [ ! -e "$b" ] && [ ! -e "$b.absent" ]; then',
  '  if [ -e "$f" ]; then cp -p "$f" "$b.tmp" && mv "$b.tmp" "$b" || exit 3; else : > "$b.absent" || exit 3; fi',
  'fi',
  'tmp="$f.kubemend-tmp"',
  'if [ -e "$f" ]; then',
  '  KM_VAR=$var KM_NEW=$new awk \'BEGIN { done = 0; re = "^[[:space:]]*" ENVIRON["KM_VAR"] "=" } $0 ~ re { if (!done) print ENVIRON["KM_NEW"]; done = 1; next } { print } END { if (!done) print ENVIRON["KM_NEW"] }\' "$f" > "$tmp" || exit 3',
  '  chmod --reference="$f" "$tmp" && chown --reference="$f" "$tmp" || exit 3',
  'else',
  '  mkdir -p "$(dirname "$f")" && printf "%s\\n" "$new" > "$tmp" && chmod 0644 "$tmp" || exit 3',
  'fi',
  'mv -f "$tmp" "$f" || exit 3',
  'echo written',
].join('\n');

/**
 * Puts file $1 back as the copy in $2 has it (or removes it if it did not exist before), only
 * if its line `$3=...` is still $4, the line the run wrote. Prints `restored`, `already` (it is
 * as the copy has it), or `differs <line>` (someone changed it since: left alone). Exit 4: no
 * copy (the write never happened: nothing to undo); 3: a write failed.
 */
export const RESTORE_ARGS_LINE_SCRIPT = [
  'set -u',
  'f=$1; bdir=$2; var=$3; written=$4',
  'b="$bdir/$(printf "%s" "$f" | tr / _)"',
  'if [ -e "$b" ]; then',
  '  if [ -e "$f" ] && cmp -s "$b" "$f"; then echo already; exit 0; fi',
  'elif [ -e "$b.absent" ]; then',
  '  if [ ! -e "$f" ]; then echo already; exit 0; fi',
  'else echo "no copy of $f in $bdir" >&2; exit 4; fi',
  'cur=$(grep -E "^[[:space:]]*$var=" "$f" 2>/dev/null | tail -n 1)',
  'if [ "$cur" != "$written" ]; then printf "differs %s\\n" "$cur"; exit 0; fi',
  'if [ -e "$b" ]; then cp -p "$b" "$f.kubemend-tmp" && mv -f "$f.kubemend-tmp" "$f" || exit 3; else rm -f "$f" || exit 3; fi',
  'echo restored',
].join('\n');

export const SCRIPT_WRITE_FAILED = 3;
export const SCRIPT_NO_COPY = 4;

/** A RUN tag as the runbook makes it (lib/runbook: the workflow ID with unsafe characters replaced). */
const RUN_TAG = /^[A-Za-z0-9-]{1,200}$/;

/** Checks a line kubemend would write: the file's variable, plain flags, one --node-ip of an IPv4 address. */
function checkNewLine(file: KubeletFile, line: string): void {
  const parsed = parseArgsLine(file, line);
  if (!parsed.args || parsed.line !== line) throw new Error(`not a plain ${KUBELET_FILES[file]} line: ${JSON.stringify(line.slice(0, 200))}`);
  const ip = nodeIpFlag(parsed.args);
  if (ip === undefined || !isIpv4(ip)) throw new Error(`the new line sets no IPv4 --node-ip: ${JSON.stringify(line.slice(0, 200))}`);
  if (line.includes('\n') || line.length > 4096) throw new Error('the new line is not one line of at most 4096 characters');
}

export function setArgsLineArgv(file: string, lineBefore: string | null, lineAfter: string, runTag: string): string[] {
  if (!isKubeletFile(file)) throw new Error(`not a kubelet flags file kubemend edits: ${JSON.stringify(file)}`);
  if (!RUN_TAG.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
  checkNewLine(file, lineAfter);
  if (lineBefore !== null && (lineBefore.includes('\n') || lineBefore === '')) throw new Error('the line before must be one non-empty line, or null');
  return ['sh', '-c', SET_ARGS_LINE_SCRIPT, 'kubemend-node-ip', file, KUBELET_FILES[file], lineBefore ?? '', lineAfter, backupDir(runTag)];
}

export function restoreArgsLineArgv(file: string, lineWritten: string, runTag: string): string[] {
  if (!isKubeletFile(file)) throw new Error(`not a kubelet flags file kubemend edits: ${JSON.stringify(file)}`);
  if (!RUN_TAG.test(runTag)) throw new Error(`not a run tag: ${JSON.stringify(runTag)}`);
  checkNewLine(file, lineWritten);
  return ['sh', '-c', RESTORE_ARGS_LINE_SCRIPT, 'kubemend-node-ip-restore', file, backupDir(runTag), KUBELET_FILES[file], lineWritten];
}

export type ArgsLineOutcome = { state: 'already' | 'written' | 'restored' } | { state: 'differs'; line: string };

/** The scripts' one line, or what was wrong with it. */
export function parseArgsLineOutput(stdout: string): ArgsLineOutcome | { problem: string } {
  const text = stdout.replace(/\n$/, '');
  if (text === 'already' || text === 'written' || text === 'restored') return { state: text };
  if (text.startsWith('differs ') || text === 'differs') return text.includes('\n') ? { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 200))}` } : { state: 'differs', line: text.slice('differs '.length) };
  return { problem: `unexpected output: ${JSON.stringify(stdout.slice(0, 200))}` };
}

/** A bootstrap token as kubeadm prints it: "<id>.<secret>", 6 and 16 of [a-z0-9]. */
const TOKEN = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;
const CA_HASH = /^sha256:[a-f0-9]{64}$/;
const ENDPOINT = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/;

export interface JoinCommand {
  endpoint: string;
  token: string;
  tokenId: string;
  caHash: string;
}

/**
 * `kubeadm token create --print-join-command`'s one line, or what was wrong with it. The
 * problem never quotes the line: it holds the token.
 */
export function parseJoinCommand(stdout: string): JoinCommand | { problem: string } {
  const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  if (lines.length !== 1) return { problem: `expected one line, got ${lines.length}` };
  const w = lines[0].split(/\s+/);
  const at = (flag: string) => (w.indexOf(flag) > 0 ? w[w.indexOf(flag) + 1] : undefined);
  if (w[0] !== 'kubeadm' || w[1] !== 'join') return { problem: 'it does not start with "kubeadm join"' };
  const endpoint = w[2];
  const token = at('--token');
  const caHash = at('--discovery-token-ca-cert-hash');
  if (!endpoint || !ENDPOINT.test(endpoint)) return { problem: `its endpoint ${JSON.stringify((endpoint ?? '').slice(0, 60))} is not <IPv4>:<port>` };
  const t = token ? TOKEN.exec(token) : null;
  if (!t) return { problem: 'it has no well-formed --token' };
  if (!caHash || !CA_HASH.test(caHash)) return { problem: 'it has no well-formed --discovery-token-ca-cert-hash' };
  return { endpoint, token: token!, tokenId: t[1], caHash };
}

/** The JoinConfiguration kubemend hands `kubeadm join --config` on stdin (it holds the token). */
export function joinConfiguration(j: JoinCommand, nodeIp: string | null, name?: string): string {
  if (!ENDPOINT.test(j.endpoint) || !TOKEN.test(j.token) || !CA_HASH.test(j.caHash) || (nodeIp !== null && !isIpv4(nodeIp)) || (name !== undefined && !NODE_NAME.test(name))) {
    throw new Error('not a join kubemend writes: endpoint, token, CA hash, node IP or node name malformed');
  }
  return [
    'apiVersion: kubeadm.k8s.io/v1beta4',
    'kind: JoinConfiguration',
    'discovery:',
    '  bootstrapToken:',
    `    apiServerEndpoint: "${j.endpoint}"`,
    `    token: "${j.token}"`,
    '    caCertHashes:',
    `    - "${j.caHash}"`,
    ...(name !== undefined || nodeIp !== null ? ['nodeRegistration:'] : []),
    ...(name !== undefined ? [`  name: "${name}"`] : []),
    ...(nodeIp !== null ? ['  kubeletExtraArgs:', '  - name: node-ip', `    value: "${nodeIp}"`] : []),
    '',
  ].join('\n');
}

/** A Node name (an RFC 1123 subdomain). */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;

/**
 * Runs `kubeadm join --config` on a JoinConfiguration read from stdin into a 0600 file under
 * /run, removed whatever the join did. Exit 3: the file could not be written; else kubeadm's.
 */
export const JOIN_SCRIPT = ['umask 077', 'f=$(mktemp /run/kubemend-join.XXXXXX) || exit 3', 'cat > "$f" || { rm -f "$f"; exit 3; }', 'kubeadm join --config "$f"', 'rc=$?', 'rm -f "$f"', 'exit $rc'].join('\n');
export const JOIN_ARGV = ['sh', '-c', JOIN_SCRIPT, 'kubemend-join'];
/** Whether the node already joined (kubeadm leaves the kubelet its kubeconfig). */
export const JOINED_ARGV = ['test', '-e', '/etc/kubernetes/kubelet.conf'];
export const tokenCreateArgv = (ttl: string) => ['kubeadm', 'token', 'create', '--ttl', ttl, '--print-join-command'];
export function tokenDeleteArgv(tokenId: string): string[] {
  if (!/^[a-z0-9]{6}$/.test(tokenId)) throw new Error('not a bootstrap token id');
  return ['kubeadm', 'token', 'delete', tokenId];
}

/** `text` with the token (and its secret half alone) replaced: what may go into an audit record, an error or a log. */
export function redactToken(text: string, token: string): string {
  const secret = token.split('.')[1] ?? token;
  return text.split(token).join('<redacted>').split(secret).join('<redacted>');
}
