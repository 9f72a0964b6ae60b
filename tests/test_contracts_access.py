"""Datanet visibility and access grants on a real anvil node: who may request, grant and revoke."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from payable import access
from payable.chain import ChainError
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec, create_datanet
from payable.keys import Role, dev_account

OWNER, TRAINER, STRANGER = dev_account(Role.DEPLOYER.value), dev_account(Role.TRAINER.value), dev_account(4)


def _create(stack, chain, deployment, *, permissioned: bool) -> int:
    return create_datanet(chain, deployment, ContentStore(stack.content_dir), OWNER, DatanetSpec("notes"),
                          min_stake=10**18, max_contribution_size=1000, validators=[],
                          permissioned=permissioned)


def test_the_four_argument_create_still_makes_a_public_datanet(chain, registry):
    receipt = chain.transact(OWNER, registry.functions.createDatanet("cas://meta", 10**18, 1000, []))
    (event,) = registry.events.DatanetCreated().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["permissioned"] is False
    assert registry.functions.hasAccess(1, STRANGER.address).call(), "a public datanet is open to anyone"
    with pytest.raises(ChainError, match="NotPermissioned"):
        chain.transact(OWNER, registry.functions.grantAccess(1, TRAINER.address))
    with pytest.raises(ChainError, match="NotPermissioned"):
        chain.transact(TRAINER, registry.functions.requestAccess(1))


def test_request_grant_revoke_emit_events_and_move_has_access(stack, chain, deployment, registry):
    datanet = _create(stack, chain, deployment, permissioned=True)
    assert registry.functions.datanets(datanet).call()[3] is True
    assert not access.has_access(chain, deployment, datanet, TRAINER.address)
    assert not access.has_access(chain, deployment, datanet, OWNER.address), "the owner too needs a grant"

    requested = access.request_access(chain, deployment, TRAINER, datanet)
    assert (requested.event, requested.datanet_id, requested.builder) == ("AccessRequested", datanet,
                                                                        TRAINER.address.lower())
    assert not access.has_access(chain, deployment, datanet, TRAINER.address), "a request is not a grant"

    granted = access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address)
    assert granted.event == "AccessGranted" and granted.builder == TRAINER.address.lower()
    assert access.has_access(chain, deployment, datanet, TRAINER.address)
    assert not access.has_access(chain, deployment, datanet, STRANGER.address)
    with pytest.raises(ChainError, match="AlreadyGranted"):
        access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address)
    with pytest.raises(ChainError, match="AlreadyGranted"):
        access.request_access(chain, deployment, TRAINER, datanet)

    revoked = access.revoke_access(chain, deployment, OWNER, datanet, TRAINER.address)
    assert revoked.event == "AccessRevoked"
    assert not access.has_access(chain, deployment, datanet, TRAINER.address)
    with pytest.raises(ChainError, match="NotGranted"):
        access.revoke_access(chain, deployment, OWNER, datanet, TRAINER.address)
    # Granted again after a revocation: a new grant, a new event.
    assert access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address).tx_hash != granted.tx_hash


def test_only_the_datanet_owner_grants_and_revokes(stack, chain, deployment):
    datanet = _create(stack, chain, deployment, permissioned=True)
    with pytest.raises(ChainError, match="NotDatanetOwner"):
        access.grant_access(chain, deployment, TRAINER, datanet, TRAINER.address)  # granting itself
    with pytest.raises(ChainError, match="NotDatanetOwner"):
        access.grant_access(chain, deployment, STRANGER, datanet, TRAINER.address)
    access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address)
    with pytest.raises(ChainError, match="NotDatanetOwner"):
        access.revoke_access(chain, deployment, STRANGER, datanet, TRAINER.address)
    assert access.has_access(chain, deployment, datanet, TRAINER.address), "the refused revoke changed nothing"


def test_unknown_datanets_and_malformed_addresses_are_refused(stack, chain, deployment):
    with pytest.raises(ChainError, match="UnknownDatanet"):
        access.request_access(chain, deployment, TRAINER, 42)
    with pytest.raises(ChainError, match="NotDatanetOwner"):
        access.grant_access(chain, deployment, OWNER, 42, TRAINER.address)
    assert not access.has_access(chain, deployment, 42, TRAINER.address)
    with pytest.raises(access.AccessError, match="not an address"):
        access.grant_access(chain, deployment, OWNER, 1, "0xnotanaddress")
