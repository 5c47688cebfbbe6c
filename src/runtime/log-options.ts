// pino options for a Spool process, from config.log: the level, and readable
// lines or JSON lines (config.logFormat decides which).
import type { LoggerOptions } from 'pino';
import { logFormat, type Config } from '../config.ts';

export function loggerOptions(config: Config, stdoutIsTty = Boolean(process.stdout.isTTY)): LoggerOptions | false {
  if (config.log.level === 'silent') return false;
  if (logFormat(config.log, stdoutIsTty) === 'json') return { level: config.log.level };
  return {
    level: config.log.level,
    transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname', colorize: stdoutIsTty } },
  };
}
