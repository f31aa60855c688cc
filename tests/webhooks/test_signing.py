"""Standard Webhooks signing, checked against the spec's vector and the reference verifier."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from inbox_service.webhooks import signing

# libraries/go/webhook_test.go::TestWebhookSign (RELIABILITY.md §6)
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"type":"conversation.assigned","data":{"id":"cnv_1"}}'


class TestSign:
    def test_known_answer_vector(self) -> None:
        signature = signing.sign([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
        assert signature == VECTOR_SIGNATURE

    def test_reference_library_verifies(self) -> None:
        secret = signing.generate_secret()
        now = int(time.time())
        headers = signing.headers([secret], "evt_1", now, BODY)
        assert Webhook(secret).verify(BODY, headers) == {
            "type": "conversation.assigned",
            "data": {"id": "cnv_1"},
        }

    def test_rotation_signs_with_both_and_both_verify(self) -> None:
        old, new = signing.generate_secret(), signing.generate_secret()
        headers = signing.headers([new, old], "evt_1", int(time.time()), BODY)
        assert len(headers["webhook-signature"].split(" ")) == 2
        Webhook(old).verify(BODY, headers)
        Webhook(new).verify(BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.generate_secret()).verify(BODY, headers)

    def test_tampered_body_fails(self) -> None:
        secret = signing.generate_secret()
        headers = signing.headers([secret], "evt_1", int(time.time()), BODY)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY.replace(b"cnv_1", b"cnv_2"), headers)

    def test_tampered_id_fails(self) -> None:
        secret = signing.generate_secret()
        headers = signing.headers([secret], "evt_1", int(time.time()), BODY)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_2"})

    @pytest.mark.parametrize(("age", "verifies"), [(-240, True), (240, True), (360, False)])
    def test_receivers_allow_five_minutes_so_each_attempt_signs_afresh(
        self, age: int, verifies: bool
    ) -> None:
        secret = signing.generate_secret()
        headers = signing.headers([secret], "evt_1", int(time.time()) - age, BODY)
        if verifies:
            Webhook(secret).verify(BODY, headers)
        else:
            with pytest.raises(WebhookVerificationError, match="too old"):
                Webhook(secret).verify(BODY, headers)

    def test_headers_are_the_three_standard_ones(self) -> None:
        headers = signing.headers([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
        assert headers == {
            "webhook-id": VECTOR_ID,
            "webhook-timestamp": "1614265330",
            "webhook-signature": VECTOR_SIGNATURE,
        }

    @pytest.mark.parametrize("msg_id", ["", "evt.1", "evt\r\nx-evil: 1", "evt 1"])
    def test_unsafe_message_id_is_refused(self, msg_id: str) -> None:
        with pytest.raises(ValueError, match="message id"):
            signing.sign([VECTOR_SECRET], msg_id, VECTOR_TIMESTAMP, BODY)

    def test_no_secret_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least one secret"):
            signing.sign([], "evt_1", VECTOR_TIMESTAMP, BODY)

    def test_a_bare_string_is_not_a_list_of_secrets(self) -> None:
        with pytest.raises(TypeError):
            signing.sign(VECTOR_SECRET, "evt_1", VECTOR_TIMESTAMP, BODY)


class TestSecrets:
    def test_generated_secret_is_32_random_bytes(self) -> None:
        secret = signing.generate_secret()
        assert secret.startswith("whsec_")
        assert len(signing.parse_secret(secret)) == 32
        assert signing.generate_secret() != secret

    def test_unpadded_base64_is_accepted(self) -> None:
        key = bytes(range(25))  # 25 bytes: base64 with padding
        unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
        assert signing.parse_secret(unpadded) == key

    @pytest.mark.parametrize(
        ("secret", "reason"),
        [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "start with 'whsec_'"),
            ("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "start with 'whsec_'"),
            ("whsec_", "24..64 bytes, not 0"),
            ("whsec_" + base64.b64encode(b"x" * 23).decode(), "not 23"),
            ("whsec_" + base64.b64encode(b"x" * 65).decode(), "not 65"),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw!", "base64"),
            ("whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw", "base64"),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa_-", "base64"),
        ],
    )
    def test_bad_secret_is_rejected_with_a_reason(self, secret: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason.replace(".", r"\.")):
            signing.parse_secret(secret)

    def test_bad_secret_is_rejected_when_signing(self) -> None:
        with pytest.raises(ValueError, match="whsec_"):
            signing.sign(["not-a-secret"], "evt_1", VECTOR_TIMESTAMP, BODY)
