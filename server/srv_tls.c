/* srv_tls: see srv_tls.h. The PEM checks are cc_tls's; this file only maps the flags
 * onto gRPC core's SSL server credentials. */
#include "srv_tls.h"

#include <stdio.h>

#include "cc_tls.h"

grpc_server_credentials *srv_tls_credentials(const char *cert_file, const char *key_file, const char *client_ca_file,
                                             const char **mode_out, char *err, size_t errlen) {
    *mode_out = "plaintext";
    if (!cc_tls_given(cert_file) && !cc_tls_given(key_file)) {
        if (cc_tls_given(client_ca_file)) {
            snprintf(err, errlen, "--tls-client-ca: needs --tls-cert and --tls-key");
            return NULL;
        }
        return grpc_insecure_server_credentials_create();
    }
    static const char *const flags[3] = {"--tls-client-ca", "--tls-cert", "--tls-key"};
    cc_tls_files f = {.ca_file = client_ca_file, .cert_file = cert_file, .key_file = key_file};
    cc_tls_pem pem;
    if (cc_tls_load(&pem, &f, flags, err, errlen) < 0) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key, .cert_chain = pem.cert};
    /* With a client CA: request, require and verify the client's certificate. */
    grpc_ssl_client_certificate_request_type req = pem.ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    /* gRPC copies the strings. */
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(pem.ca, &pair, 1, req, NULL);
    int mutual = pem.ca != NULL;
    cc_tls_pem_free(&pem);
    if (!creds) snprintf(err, errlen, "--tls-cert: gRPC refused the certificate or key");
    else *mode_out = mutual ? "mtls" : "tls";
    return creds;
}
