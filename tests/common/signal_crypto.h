/* tests/common/signal_crypto.h: a libsignal-protocol-c crypto provider on OpenSSL 3, for the test
 * programs (tests/clients/omemo_client.c, tests/unit/test_omemo_bundle.c). */
#ifndef CIVITAS_TESTS_SIGNAL_CRYPTO_H
#define CIVITAS_TESTS_SIGNAL_CRYPTO_H
#include <signal_protocol.h>

/* Pass to signal_context_set_crypto_provider; user_data is unused. */
extern const signal_crypto_provider signal_crypto_openssl;

#endif
