// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title DatanetRegistry: where contributors submit data to Datanets, staking OPEN on each contribution.
/// @notice Contribution content lives off-chain (content-addressed by sha256); the chain records who
/// submitted which hash to which datanet, with what stake. Events carry everything the pipeline needs,
/// so the pipeline never has to read contract storage.
/// Protocol parameters (minimum stake floor, stake lock period, treasury) belong to the owner, which in
/// a deployment is the governance timelock.
/// A datanet is public (anyone may train on it) or permissioned, fixed at creation: a model builder then
/// requests access and the datanet's owner grants or revokes it. Grants are events too, so the pipeline
/// decides who may train from the log, and the audit shows who was granted what, and when it ended.
contract DatanetRegistry is Ownable {
    using SafeERC20 for IERC20;

    struct Datanet {
        address owner;
        uint64 maxContributionSize;
        uint128 minStake;
        bool permissioned;
    }

    enum Status {
        None,
        Staked,
        Slashed,
        Released
    }

    struct Contribution {
        address contributor;
        uint64 datanetId;
        uint32 submittedAt;
        Status status;
        uint128 stake;
    }

    IERC20 public immutable token;
    address public treasury;
    uint256 public minimumStake;
    uint256 public stakeLockPeriod;
    uint256 public datanetCount;
    uint256 public contributionCount;

    mapping(uint256 => Datanet) public datanets;
    mapping(uint256 => mapping(address => bool)) public isValidator;
    mapping(uint256 => Contribution) public contributions;
    /// datanet id -> model builder -> holds a live grant (permissioned datanets only).
    mapping(uint256 => mapping(address => bool)) public isGranted;

    event DatanetCreated(
        uint256 indexed datanetId,
        address indexed owner,
        string metadataURI,
        uint256 minStake,
        uint64 maxContributionSize,
        bool permissioned,
        address[] validators
    );
    event ValidatorSet(uint256 indexed datanetId, address indexed validator, bool enabled);
    event ContributionSubmitted(
        uint256 indexed contributionId,
        uint256 indexed datanetId,
        address indexed contributor,
        bytes32 contentHash,
        string uri,
        uint64 size,
        uint256 stake
    );
    event StakeSlashed(
        uint256 indexed contributionId,
        uint256 indexed datanetId,
        address indexed validator,
        uint8 reasonCode,
        uint256 amount
    );
    event AccessRequested(uint256 indexed datanetId, address indexed builder);
    event AccessGranted(uint256 indexed datanetId, address indexed builder);
    event AccessRevoked(uint256 indexed datanetId, address indexed builder);
    event StakeReleased(uint256 indexed contributionId, address indexed contributor, uint256 amount);
    event MinimumStakeChanged(uint256 previous, uint256 current);
    event StakeLockPeriodChanged(uint256 previous, uint256 current);
    event TreasuryChanged(address previous, address current);

    error UnknownDatanet(uint256 datanetId);
    error UnknownContribution(uint256 contributionId);
    error NotDatanetOwner(uint256 datanetId, address caller);
    error NotValidator(uint256 datanetId, address caller);
    error EmptyContribution();
    error ContributionTooLarge(uint64 size, uint64 maxSize);
    error StakeBelowFloor(uint256 minStake, uint256 floor);
    error NotStaked(uint256 contributionId);
    error StakeLocked(uint256 contributionId, uint256 unlocksAt);
    error NotContributor(uint256 contributionId, address caller);
    error NotPermissioned(uint256 datanetId);
    error AlreadyGranted(uint256 datanetId, address builder);
    error NotGranted(uint256 datanetId, address builder);

    constructor(IERC20 token_, address owner_, address treasury_, uint256 minimumStake_, uint256 stakeLockPeriod_)
        Ownable(owner_)
    {
        token = token_;
        treasury = treasury_;
        minimumStake = minimumStake_;
        stakeLockPeriod = stakeLockPeriod_;
    }

    // ---- datanets -------------------------------------------------------------------------------

    /// @notice Creates a public datanet (anyone may train on its data).
    function createDatanet(
        string calldata metadataURI,
        uint128 minStake,
        uint64 maxContributionSize,
        address[] calldata validators
    ) external returns (uint256) {
        return _createDatanet(metadataURI, minStake, maxContributionSize, validators, false);
    }

    /// @notice Creates a datanet, permissioned (training needs the owner's grant) or public.
    function createDatanet(
        string calldata metadataURI,
        uint128 minStake,
        uint64 maxContributionSize,
        address[] calldata validators,
        bool permissioned
    ) external returns (uint256) {
        return _createDatanet(metadataURI, minStake, maxContributionSize, validators, permissioned);
    }

    function _createDatanet(
        string calldata metadataURI,
        uint128 minStake,
        uint64 maxContributionSize,
        address[] calldata validators,
        bool permissioned
    ) private returns (uint256 datanetId) {
        if (minStake < minimumStake) revert StakeBelowFloor(minStake, minimumStake);
        datanetId = ++datanetCount;
        datanets[datanetId] = Datanet(msg.sender, maxContributionSize, minStake, permissioned);
        for (uint256 i = 0; i < validators.length; ++i) {
            isValidator[datanetId][validators[i]] = true;
        }
        emit DatanetCreated(
            datanetId, msg.sender, metadataURI, minStake, maxContributionSize, permissioned, validators
        );
    }

    function setValidator(uint256 datanetId, address validator, bool enabled) external {
        if (datanets[datanetId].owner != msg.sender) revert NotDatanetOwner(datanetId, msg.sender);
        isValidator[datanetId][validator] = enabled;
        emit ValidatorSet(datanetId, validator, enabled);
    }

    // ---- access (permissioned datanets) ---------------------------------------------------------

    /// @notice A model builder asks a permissioned datanet's owner for access; the request is only an event.
    function requestAccess(uint256 datanetId) external {
        Datanet storage net = datanets[datanetId];
        if (net.owner == address(0)) revert UnknownDatanet(datanetId);
        if (!net.permissioned) revert NotPermissioned(datanetId);
        if (isGranted[datanetId][msg.sender]) revert AlreadyGranted(datanetId, msg.sender);
        emit AccessRequested(datanetId, msg.sender);
    }

    /// @notice The datanet's owner lets `builder` train on its data (with or without a prior request).
    /// A second grant while one is live reverts, so each grant on the log ends in at most one revocation.
    function grantAccess(uint256 datanetId, address builder) external {
        _checkOwnedPermissioned(datanetId);
        if (isGranted[datanetId][builder]) revert AlreadyGranted(datanetId, builder);
        isGranted[datanetId][builder] = true;
        emit AccessGranted(datanetId, builder);
    }

    /// @notice The datanet's owner ends `builder`'s grant; adapters trained before stay traced to it.
    function revokeAccess(uint256 datanetId, address builder) external {
        _checkOwnedPermissioned(datanetId);
        if (!isGranted[datanetId][builder]) revert NotGranted(datanetId, builder);
        isGranted[datanetId][builder] = false;
        emit AccessRevoked(datanetId, builder);
    }

    /// @notice Whether `account` may train on the datanet: any account for a public one, a grant holder
    /// for a permissioned one (the owner too needs a grant, so every adapter names the grant it used).
    function hasAccess(uint256 datanetId, address account) external view returns (bool) {
        Datanet storage net = datanets[datanetId];
        if (net.owner == address(0)) return false;
        return !net.permissioned || isGranted[datanetId][account];
    }

    function _checkOwnedPermissioned(uint256 datanetId) private view {
        Datanet storage net = datanets[datanetId];
        if (net.owner != msg.sender) revert NotDatanetOwner(datanetId, msg.sender);
        if (!net.permissioned) revert NotPermissioned(datanetId);
    }

    /// @notice The stake a new contribution to `datanetId` must carry: the datanet's own minimum,
    /// raised to the protocol floor if governance has lifted the floor since the datanet was created.
    function requiredStake(uint256 datanetId) public view returns (uint256) {
        uint256 own = datanets[datanetId].minStake;
        return own > minimumStake ? own : minimumStake;
    }

    // ---- contributions --------------------------------------------------------------------------

    function contribute(uint256 datanetId, bytes32 contentHash, string calldata uri, uint64 size)
        external
        returns (uint256 contributionId)
    {
        Datanet storage net = datanets[datanetId];
        if (net.owner == address(0)) revert UnknownDatanet(datanetId);
        if (size == 0) revert EmptyContribution();
        if (size > net.maxContributionSize) revert ContributionTooLarge(size, net.maxContributionSize);
        uint256 stake = requiredStake(datanetId);
        contributionId = ++contributionCount;
        contributions[contributionId] =
            Contribution(msg.sender, uint64(datanetId), uint32(block.timestamp), Status.Staked, uint128(stake));
        if (stake > 0) token.safeTransferFrom(msg.sender, address(this), stake);
        emit ContributionSubmitted(contributionId, datanetId, msg.sender, contentHash, uri, size, stake);
    }

    /// @notice A datanet validator confiscates a contribution's stake (redundant, adversarial or invalid data).
    function slash(uint256 contributionId, uint8 reasonCode) external {
        Contribution storage c = contributions[contributionId];
        if (c.status == Status.None) revert UnknownContribution(contributionId);
        if (!isValidator[c.datanetId][msg.sender]) revert NotValidator(c.datanetId, msg.sender);
        if (c.status != Status.Staked) revert NotStaked(contributionId);
        c.status = Status.Slashed;
        uint256 amount = c.stake;
        if (amount > 0) token.safeTransfer(treasury, amount);
        emit StakeSlashed(contributionId, c.datanetId, msg.sender, reasonCode, amount);
    }

    /// @notice Returns a contribution's stake to its contributor once the lock period has passed unslashed.
    function releaseStake(uint256 contributionId) external {
        Contribution storage c = contributions[contributionId];
        if (c.status == Status.None) revert UnknownContribution(contributionId);
        if (c.contributor != msg.sender) revert NotContributor(contributionId, msg.sender);
        if (c.status != Status.Staked) revert NotStaked(contributionId);
        uint256 unlocksAt = uint256(c.submittedAt) + stakeLockPeriod;
        if (block.timestamp < unlocksAt) revert StakeLocked(contributionId, unlocksAt);
        c.status = Status.Released;
        uint256 amount = c.stake;
        if (amount > 0) token.safeTransfer(msg.sender, amount);
        emit StakeReleased(contributionId, msg.sender, amount);
    }

    // ---- governance -----------------------------------------------------------------------------

    function setMinimumStake(uint256 newMinimumStake) external onlyOwner {
        emit MinimumStakeChanged(minimumStake, newMinimumStake);
        minimumStake = newMinimumStake;
    }

    function setStakeLockPeriod(uint256 newPeriod) external onlyOwner {
        emit StakeLockPeriodChanged(stakeLockPeriod, newPeriod);
        stakeLockPeriod = newPeriod;
    }

    function setTreasury(address newTreasury) external onlyOwner {
        emit TreasuryChanged(treasury, newTreasury);
        treasury = newTreasury;
    }
}
