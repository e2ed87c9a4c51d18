/**
 * The one place where a remote command line is built. Every argument is single-quoted
 * unless it consists only of characters no POSIX shell treats specially, so no value can
 * change the shape of the command. Callers pass argv arrays, never strings.
 */
// No '=': an unquoted first word like PATH=/x would be a variable assignment, not a command.
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

export function quote(arg: string): string {
  if (arg.includes('\0')) throw new Error('shell argument contains a NUL byte');
  if (arg !== '' && SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('empty command');
  return argv.map(quote).join(' ');
}
