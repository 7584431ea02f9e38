/* srv_tls: the server credentials behind --tls-cert, --tls-key and --tls-client-ca.
 * Owns the choice between plaintext, TLS and mutual TLS; knows nothing of calls. */
#ifndef SRV_TLS_H
#define SRV_TLS_H

#include <grpc/grpc_security.h>
#include <stddef.h>

/** Credentials for the gRPC port: insecure when cert_file is not given; TLS with
 * that certificate (chain) and key; with client_ca_file, mutual TLS: every client
 * must present a certificate that CA signed (no certificate, or another CA's, and the
 * handshake fails). The files are read and checked now. Returns the credentials
 * (the caller owns them: srv_rpc_start takes them through srv_rpc_config.creds), or
 * NULL with "<flag>: <reason>" in err. *mode_out gets "plaintext", "tls" or "mtls". */
grpc_server_credentials *srv_tls_credentials(const char *cert_file, const char *key_file, const char *client_ca_file,
                                             const char **mode_out, char *err, size_t errlen);

#endif
