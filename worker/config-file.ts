/** Reads kubemend's YAML config (--config, else $KUBEMEND_CONFIG) and validates it. */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { type Config, ConfigError, parseConfig } from '../lib/config';

export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const p = flag ?? env.KUBEMEND_CONFIG;
  if (!p) throw new ConfigError(['no config file: pass --config FILE or set KUBEMEND_CONFIG']);
  return resolve(p);
}

export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], path);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    const msg = err instanceof YAMLParseError ? err.message.split('\n')[0] : String(err);
    throw new ConfigError([`not valid YAML: ${msg}`], path);
  }
  return parseConfig(doc, { resolvePath: configPathResolver(dirname(path)), env, source: path });
}

/** Paths in config: absolute, `~/...` (home directory), or relative to the config file's directory. */
export function configPathResolver(base: string, home = homedir()): (p: string) => string {
  return (p) => (p === '~' ? home : p.startsWith('~/') ? join(home, p.slice(2)) : isAbsolute(p) ? p : resolve(base, p));
}
