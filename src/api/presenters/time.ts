export const unixSeconds = (ms: number): number => Math.floor(ms / 1000);
export const unixSecondsOrNull = (ms: number | null): number | null => (ms === null ? null : Math.floor(ms / 1000));
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
