// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title RewardDistributor: pays contributors per reward epoch against a Merkle root of (index, account, amount).
/// @notice Leaves are double-hashed exactly as @openzeppelin/merkle-tree's StandardMerkleTree does:
/// keccak256(bytes.concat(keccak256(abi.encode(index, account, amount)))); `index` is the account's position in
/// the epoch's payout list (ascending addresses), so each leaf owns one bit of the epoch's claimed bitmap.
/// Gas per epoch does not grow with the number of contributors: one root per epoch, one claim per account.
/// An epoch id can be published once (exactly-once payouts start here); only the rewards operator publishes;
/// the operator role is granted and revoked by the admin, which in a deployment is the governance timelock.
contract RewardDistributor is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant REWARDS_OPERATOR_ROLE = keccak256("REWARDS_OPERATOR_ROLE");

    struct Claim {
        uint256 index;
        address account;
        uint256 amount;
        bytes32[] proof;
    }

    IERC20 public immutable token;
    /// @dev Tokens promised by published epochs and not yet claimed, plus one: the slot never returns to zero,
    /// so publishing after everything was claimed rewrites it (~2.9k gas) rather than re-creating it (~20k).
    uint256 private _outstandingPlusOne = 1;
    mapping(uint256 => bytes32) public epochRoot;
    /// @dev Claimed flags of an epoch as one bit per leaf index, 256 leaves to a word (Uniswap's merkle-distributor
    /// layout): only the first claim of a word fills a fresh slot (~22.1k gas), the other 255 rewrite a non-zero
    /// word (~5k), so a new account's claim is not charged a slot of its own as it was with per-account words.
    mapping(uint256 => mapping(uint256 => uint256)) private _claimedWords;

    event EpochPublished(uint256 indexed epochId, bytes32 merkleRoot, uint256 total);
    event RewardClaimed(uint256 indexed epochId, address indexed account, uint256 amount);

    error EpochAlreadyPublished(uint256 epochId);
    error EmptyRoot();
    error Underfunded(uint256 balance, uint256 required);
    error UnknownEpoch(uint256 epochId);
    error AlreadyClaimed(uint256 epochId, uint256 index);
    error InvalidProof(uint256 epochId, uint256 index, address account, uint256 amount);

    constructor(IERC20 token_, address admin, address operator) {
        token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REWARDS_OPERATOR_ROLE, operator);
    }

    /// @notice Publishes an epoch's root. The distributor must already hold enough OPEN for it.
    function publishEpoch(uint256 epochId, bytes32 merkleRoot, uint256 total)
        external
        onlyRole(REWARDS_OPERATOR_ROLE)
    {
        if (merkleRoot == bytes32(0)) revert EmptyRoot();
        if (epochRoot[epochId] != bytes32(0)) revert EpochAlreadyPublished(epochId);
        uint256 required = _outstandingPlusOne - 1 + total;
        uint256 balance = token.balanceOf(address(this));
        if (balance < required) revert Underfunded(balance, required);
        epochRoot[epochId] = merkleRoot;
        _outstandingPlusOne = required + 1;
        emit EpochPublished(epochId, merkleRoot, total);
    }

    /// @notice Tokens promised by published epochs and not yet claimed; the balance must always cover it.
    function outstanding() public view returns (uint256) {
        return _outstandingPlusOne - 1;
    }

    /// @notice Whether leaf `index` of `epochId` has been claimed.
    function isClaimed(uint256 epochId, uint256 index) public view returns (bool) {
        return _claimedWords[epochId][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @notice Pays `amount` to `account` for `epochId`; anyone may submit it, the tokens go to `account`.
    function claim(uint256 epochId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
    {
        _claim(epochId, index, account, amount, proof);
    }

    /// @notice Push mode: one transaction pays many accounts of a small epoch.
    function claimBatch(uint256 epochId, Claim[] calldata claims) external {
        for (uint256 i = 0; i < claims.length; ++i) {
            _claim(epochId, claims[i].index, claims[i].account, claims[i].amount, claims[i].proof);
        }
    }

    function _claim(uint256 epochId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        private
    {
        bytes32 root = epochRoot[epochId];
        if (root == bytes32(0)) revert UnknownEpoch(epochId);
        uint256 word = _claimedWords[epochId][index >> 8];
        uint256 bit = 1 << (index & 0xff);
        if (word & bit != 0) revert AlreadyClaimed(epochId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof(epochId, index, account, amount);
        _claimedWords[epochId][index >> 8] = word | bit;
        _outstandingPlusOne = _outstandingPlusOne - 1 - amount + 1; // reverts if amount exceeds what is owed
        token.safeTransfer(account, amount);
        emit RewardClaimed(epochId, account, amount);
    }
}
