// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title OPEN: the payable token. Stakes, rewards and governance votes are all denominated in it.
/// @notice The whole supply is minted once to `treasury`; there is no further minting.
contract OpenToken is ERC20, ERC20Permit, ERC20Votes {
    constructor(address treasury, uint256 supply) ERC20("Open", "OPEN") ERC20Permit("Open") {
        _mint(treasury, supply);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
