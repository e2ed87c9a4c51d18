import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { commandLine } from '../../lib/shell';
import { parseProbeOutput, PROBE_SCRIPT, probeArgv, probeFacts } from '../../lib/probe-script';

const M = '0123456789abcdef0123456789abcdef';

describe('the probe script through a real sh', () => {
  // Read-only: the script only cats three files and runs `ip -j`.
  const stdout = execFileSync('/bin/sh', ['-c', commandLine(probeArgv(M))], { encoding: 'utf8' });
  const sections = parseProbeOutput(stdout, M);

  test('yields every section with its exit status', () => {
    expect(Object.keys(sections).sort()).toEqual(['bootId', 'dbusMachineId', 'defaultRoute', 'links', 'machineId']);
    expect(sections.machineId).toEqual({ exitCode: 0, text: readFileSync('/etc/machine-id', 'utf8') });
  });

  test('facts match this machine', () => {
    const facts = probeFacts('here', sections);
    expect(facts.machineId).toBe(readFileSync('/etc/machine-id', 'utf8').trim());
    expect(facts.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(facts.links.map((l) => l.ifname)).toContain('lo');
    expect(facts.problems).toEqual([]);
  });
});

describe('parseProbeOutput', () => {
  test('a file that does not exist is a problem naming the file, not an empty id', () => {
    // The same function, with the path swapped for one that cannot exist, run by a real sh.
    const script = PROBE_SCRIPT.replace('cat -- /var/lib/dbus/machine-id', 'cat -- /nonexistent/kubemend/machine-id');
    const out = execFileSync('/bin/sh', ['-c', script, 'x', M], { encoding: 'utf8' });
    const facts = probeFacts('n', parseProbeOutput(out, M));
    expect(facts.dbusMachineId).toBeNull();
    expect(facts.problems).toEqual([expect.stringMatching(/^\/var\/lib\/dbus\/machine-id: cat: \/nonexistent\/kubemend\/machine-id: No such file or directory$/)]);
  });

  test('an empty machine-id file is reported as empty (cloned images ship it so)', () => {
    const out = `${M} begin machineId\n\n${M} end 0\n`;
    const facts = probeFacts('n', parseProbeOutput(out, M));
    expect(facts.machineId).toBeNull();
    expect(facts.problems).toEqual(expect.arrayContaining(['/etc/machine-id is empty']));
  });

  test('markers with another nonce inside a file are just content', () => {
    const forged = 'ffffffffffffffffffffffffffffffff';
    const out = `${M} begin machineId\n${forged} end 0\n${forged} begin bootId\n${M} end 0\n`;
    const s = parseProbeOutput(out, M);
    expect(Object.keys(s)).toEqual(['machineId']);
    expect(s.machineId!.text).toBe(`${forged} end 0\n${forged} begin bootId`);
  });

  test('output cut short names the sections that never arrived', () => {
    const out = `${M} begin machineId\n3d1219c7c4c5404aaa1f6d2a48adfda4\n\n${M} end 0\n${M} begin dbusMachineId\n3d12`;
    const facts = probeFacts('n', parseProbeOutput(out, M));
    expect(facts.machineId).toBe('3d1219c7c4c5404aaa1f6d2a48adfda4');
    expect(facts.problems).toEqual([
      '/var/lib/dbus/machine-id: no output (the probe script was cut short)',
      '/proc/sys/kernel/random/boot_id: no output (the probe script was cut short)',
      'ip -j link: no output (the probe script was cut short)',
      'ip -j route show default: no output (the probe script was cut short)',
    ]);
  });

  test('the marker must be hex, so it can never carry shell syntax', () => {
    expect(() => probeArgv('$(reboot)')).toThrow(/hex/);
    expect(() => probeArgv('abc')).toThrow(/hex/);
  });
});
