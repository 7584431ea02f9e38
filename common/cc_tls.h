/* cc_tls: reads and checks the PEM files behind every --tls-* flag, for the server's
 * credentials (server/srv_tls.c) and the clients' (client/cc_client.c). It checks
 * what gRPC would only find at the first handshake (a file that is no certificate,
 * a key that is not the certificate's), so a binary given a bad file fails at start
 * with a one-line reason naming the flag. Builds no gRPC object itself. */
#ifndef CC_TLS_H
#define CC_TLS_H

#include <stddef.h>

/** Paths named by the flags; NULL or "" = not given. Borrowed (argv / environment). */
typedef struct {
    const char *ca_file;   /* server: CA of client certificates (mTLS); client: CA of the server */
    const char *cert_file; /* own certificate (chain), PEM */
    const char *key_file;  /* its private key, PEM */
} cc_tls_files;

/** The files' contents, NUL-terminated, malloc'd; NULL where the file was not given. */
typedef struct {
    char *ca;
    char *cert;
    char *key;
} cc_tls_pem;

/** Reads every given file of `f` into *out and checks it: the CA and certificate
 * files hold at least one X.509 certificate, the key file a private key matching
 * the first certificate; cert and key come together. `flags` names the flags in
 * messages, e.g. {"--tls-client-ca", "--tls-cert", "--tls-key"}. Returns 0, or -1
 * with "<flag>: <reason>" in err (and *out left empty). Free with cc_tls_pem_free. */
int cc_tls_load(cc_tls_pem *out, const cc_tls_files *f, const char *const flags[3], char *err, size_t errlen);

/** Frees what cc_tls_load filled (the key is wiped first); safe on a zeroed struct. */
void cc_tls_pem_free(cc_tls_pem *p);

/** 1 if the path is set (not NULL, not ""). */
static inline int cc_tls_given(const char *path) { return path && *path; }

#endif
