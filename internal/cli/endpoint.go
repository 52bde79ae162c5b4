package cli

import "os"

// endpointSocketEnv is the SPIFFE standard variable that names the
// Workload API socket (unix:///path or tcp://host:port).
const endpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// workloadAPIOrEnv is the Workload API socket a command uses: the
// --workload-api flag's, else, when no --identity-dir is given either,
// $SPIFFE_ENDPOINT_SOCKET.
func workloadAPIOrEnv(identityDir, workloadAPI string) string {
	if workloadAPI != "" || identityDir != "" {
		return workloadAPI
	}
	return os.Getenv(endpointSocketEnv)
}
