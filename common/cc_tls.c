/* cc_tls: see cc_tls.h. Uses OpenSSL's PEM readers only to check the files; the
 * handshakes are gRPC's. */
#include "cc_tls.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CC_TLS_MAX_FILE (1 << 20) /* a PEM bundle larger than 1 MiB is a mistake */

/* Reads the whole file; NULL with the reason in err. */
static char *read_file(const char *flag, const char *path, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot read %s: %s", flag, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CC_TLS_MAX_FILE + 1);
    if (!buf) abort();
    size_t n = fread(buf, 1, CC_TLS_MAX_FILE + 1, fp);
    int bad = ferror(fp);
    fclose(fp);
    if (bad || n == 0 || n > CC_TLS_MAX_FILE) {
        snprintf(err, errlen, "%s: %s is %s", flag, path, bad ? "unreadable" : n ? "larger than 1 MiB" : "empty");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Number of certificates in the PEM text; *first (if not NULL) gets the first. */
static int count_certs(const char *pem, X509 **first) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (n == 0 && first) *first = x;
        else X509_free(x);
        n++;
    }
    ERR_clear_error(); /* the read that ended the loop */
    BIO_free(b);
    return n;
}

static void wipe_free(char *s) {
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void cc_tls_pem_free(cc_tls_pem *p) {
    if (!p) return;
    free(p->ca);
    free(p->cert);
    wipe_free(p->key);
    memset(p, 0, sizeof *p);
}

int cc_tls_load(cc_tls_pem *out, const cc_tls_files *f, const char *const flags[3], char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    X509 *leaf = NULL;
    EVP_PKEY *pkey = NULL;
    int have_cert = cc_tls_given(f->cert_file), have_key = cc_tls_given(f->key_file);
    if (have_cert != have_key) {
        snprintf(err, errlen, "%s: needs %s too", have_cert ? flags[1] : flags[2], have_cert ? flags[2] : flags[1]);
        return -1;
    }
    if (cc_tls_given(f->ca_file)) {
        if (!(out->ca = read_file(flags[0], f->ca_file, err, errlen))) goto fail;
        if (count_certs(out->ca, NULL) == 0) {
            snprintf(err, errlen, "%s: %s holds no PEM certificate", flags[0], f->ca_file);
            goto fail;
        }
    }
    if (have_cert) {
        if (!(out->cert = read_file(flags[1], f->cert_file, err, errlen))) goto fail;
        if (count_certs(out->cert, &leaf) == 0) {
            snprintf(err, errlen, "%s: %s holds no PEM certificate", flags[1], f->cert_file);
            goto fail;
        }
        if (!(out->key = read_file(flags[2], f->key_file, err, errlen))) goto fail;
        BIO *b = BIO_new_mem_buf(out->key, -1);
        pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        if (!pkey) {
            snprintf(err, errlen, "%s: %s holds no PEM private key (or it is encrypted)", flags[2], f->key_file);
            goto fail;
        }
        if (X509_check_private_key(leaf, pkey) != 1) {
            snprintf(err, errlen, "%s: %s is not the key of the certificate in %s", flags[2], f->key_file,
                     f->cert_file);
            goto fail;
        }
    }
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return 0;
fail:
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    cc_tls_pem_free(out);
    return -1;
}
