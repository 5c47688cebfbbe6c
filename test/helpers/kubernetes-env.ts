// What Kubernetes puts in the environment of every pod in a namespace that has
// a Service named "spool" (service links, on unless the pod spec sets
// enableServiceLinks: false): docker-link-style variables under SPOOL_.
export const KUBERNETES_SERVICE_LINKS: Record<string, string> = {
  SPOOL_PORT: 'tcp://10.96.0.12:8080',
  SPOOL_SERVICE_HOST: '10.96.0.12',
  SPOOL_SERVICE_PORT: '8080',
  SPOOL_SERVICE_PORT_HTTP: '8080',
  SPOOL_PORT_8080_TCP: 'tcp://10.96.0.12:8080',
  SPOOL_PORT_8080_TCP_PROTO: 'tcp',
  SPOOL_PORT_8080_TCP_PORT: '8080',
  SPOOL_PORT_8080_TCP_ADDR: '10.96.0.12',
};
