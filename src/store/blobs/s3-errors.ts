// Reading the AWS SDK's errors: which ones mean "no such object", and a
// one-line reason for start-up when the bucket cannot be used.

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

const shapeOf = (err: unknown): SdkErrorShape => (typeof err === 'object' && err !== null ? (err as SdkErrorShape) : {});

/** The HTTP status S3 answered with, or undefined when no answer came (network failure). */
export function httpStatusOf(err: unknown): number | undefined {
  return shapeOf(err).$metadata?.httpStatusCode;
}

/** GET answers NoSuchKey; HEAD has no body, so the SDK can only name it NotFound. */
export function isNotFound(err: unknown): boolean {
  const { name } = shapeOf(err);
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatusOf(err) === 404;
}

export function describeBucketProblem(err: unknown, bucket: string, where: string): string {
  const status = httpStatusOf(err);
  const subject = `S3 bucket "${bucket}" at ${where}`;
  if (status === 404) return `${subject} does not exist (create it, or fix blobs.s3.bucket)`;
  if (status === 403) return `${subject} refused access: check blobs.s3.accessKeyId and blobs.s3.secretAccessKey`;
  if (status === 301 || status === 400) return `${subject} answered ${status}: the bucket is probably in another region than blobs.s3.region`;
  const { code, name, message } = shapeOf(err);
  // Node reports a refused connection as an AggregateError with an empty message, so the code is the useful part.
  const reason = [code, message].filter((part) => part && part.trim() !== '').join(': ') || name || String(err);
  const oneLine = reason.replace(/\s+/g, ' ').trim();
  return status === undefined ? `${subject} is unreachable: ${oneLine}` : `${subject} answered ${status}: ${oneLine}`;
}
