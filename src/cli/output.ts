// What the client commands print. Data goes to stdout (a table for people,
// JSON with --json for scripts); everything else goes to stderr through
// `note`, so `spool … --json | jq` never sees a progress line or a log.
import Table from 'cli-table3';

/** A borderless, left-aligned table in the style of `docker ps` / `kubectl get`, readable in any terminal and in logs. */
function plainTable(head?: string[]): Table.Table {
  const none = '';
  return new Table({
    ...(head ? { head } : {}),
    chars: {
      top: none, 'top-mid': none, 'top-left': none, 'top-right': none,
      bottom: none, 'bottom-mid': none, 'bottom-left': none, 'bottom-right': none,
      left: none, 'left-mid': none, mid: none, 'mid-mid': none,
      right: none, 'right-mid': none, middle: '  ',
    },
    // No colours: the output is often piped, and escape codes would end up in files.
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
}

type Cell = string | number | null | undefined;

/** Rows under a header, or `empty` on stdout when there are none. */
export function printTable(head: string[], rows: Cell[][], empty: string): void {
  if (rows.length === 0) {
    process.stdout.write(`${empty}\n`);
    return;
  }
  const table = plainTable(head);
  table.push(...rows.map((row) => row.map((cell) => (cell === null || cell === undefined ? '-' : String(cell)))));
  process.stdout.write(`${trimLines(table.toString())}\n`);
}

/** One object as "field  value" lines. */
export function printFields(fields: Array<[string, Cell]>): void {
  const table = plainTable();
  for (const [name, value] of fields) table.push([name, value === null || value === undefined ? '-' : String(value)]);
  process.stdout.write(`${trimLines(table.toString())}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A message for the person at the terminal (stderr). */
export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

// cli-table3 pads the last column too; trailing blanks only get in the way of grep and diff.
function trimLines(text: string): string {
  return text
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n');
}

/** Unix seconds (the OpenAI wire form) as a compact local-independent UTC timestamp. */
export function formatTime(seconds: number | null | undefined): string | null {
  if (seconds === null || seconds === undefined) return null;
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Seconds as "42s", "3m05s", "2h07m". */
export function formatDuration(totalSeconds: number): string {
  const seconds = Math.max(0, Math.round(totalSeconds));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}
